//! End-to-end runs of the real binary against real redis-server processes (and the
//! Docker Engine for the Docker steps): gates, resume, lock, interruption, rollback,
//! reports, and secrets kept out of everything.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use redis_move_testbed::RedisServer;

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(runbook: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runbook.yaml"), runbook).unwrap();
        Workspace { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("redis-move").unwrap();
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env("USER", "tester");
        cmd
    }

    fn journal(&self) -> serde_json::Value {
        let runs = self
            .path()
            .join(".redis-move")
            .join(self.name())
            .join("runs");
        redis_move_testbed::workspace::read_journal(
            &redis_move_testbed::workspace::latest_run(&runs).unwrap(),
        )
        .unwrap()
    }

    fn name(&self) -> String {
        let text = std::fs::read_to_string(self.path().join("runbook.yaml")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("name: "))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Everything the run left on disk, concatenated (journal, reports).
    fn state_text(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.path().join(".redis-move")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        out
    }
}

fn counter_runbook(server: &RedisServer, extra_steps: &str) -> String {
    format!(
        "version: 1\nname: counter\nsecrets:\n  pw: {{ env: RUN_TEST_PW }}\ntargets:\n  r: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\" }} }}\nphases:\n  - id: first\n    steps:\n      - {{ id: count, redis.command: {{ args: [INCR, runs] }}, rollback: none }}\n  - id: go\n    gate: {{ question: \"Go on?\" }}\n  - id: second\n    steps:\n{extra_steps}",
        server.port
    )
}

const PW: &str = "Run-Secret-Pw-9";

#[test]
fn gate_stop_approve_resume_and_secrets_stay_hidden() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: mark, redis.command: { args: [SET, marker, done] }, rollback: none }\n      - { id: echo, shell: { script: 'echo \"pw is $PW\"', env: { PW: \"${secrets.pw}\" } }, rollback: none }\n",
    ));
    // No terminal, no approval: stop at the gate, exit 4.
    let first = ws
        .cmd()
        .env("RUN_TEST_PW", PW)
        .args(["run", "runbook.yaml"])
        .assert()
        .code(4);
    let out = String::from_utf8_lossy(&first.get_output().stderr).to_string();
    assert!(out.contains("stopped at `go`"), "{out}");
    assert_eq!(ws.journal()["status"], "stopped_at_gate");
    assert_eq!(server.cli(&["GET", "runs"]).trim(), "1");
    // Approve from "another shell", then resume: the first phase does not run again.
    let run_id = ws.journal()["run_id"].as_str().unwrap().to_owned();
    ws.cmd().args(["approve", &run_id, "go"]).assert().success();
    let resumed = ws
        .cmd()
        .env("RUN_TEST_PW", PW)
        .args(["resume"])
        .assert()
        .success();
    assert_eq!(
        server.cli(&["GET", "runs"]).trim(),
        "1",
        "finished steps are not re-run"
    );
    assert_eq!(server.cli(&["GET", "marker"]).trim(), "done");
    let journal = ws.journal();
    assert_eq!(journal["status"], "succeeded");
    assert_eq!(journal["gates"][0]["how"], "approve command");
    // The secret reached the shell step, and appears nowhere.
    let stderr = String::from_utf8_lossy(&resumed.get_output().stderr).to_string();
    assert!(stderr.contains("pw is ****"), "{stderr}");
    let everything = format!("{out}{stderr}{}", ws.state_text());
    assert!(!everything.contains(PW), "the secret leaked");
    let report = std::fs::read_to_string(
        ws.path()
            .join(".redis-move/counter/runs")
            .join(&run_id)
            .join("report.md"),
    )
    .unwrap();
    assert!(report.contains("**Migration complete:** ☑ Yes"), "{report}");
    assert!(report.contains("| `go` | GO | tester@"), "{report}");
}

#[test]
fn a_failed_step_resumes_at_that_step() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: need, redis.command: { args: [GET, ready], read_only: true }, expect: \"== yes\" }\n",
    ));
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args([
            "run",
            "runbook.yaml",
            "--approve",
            "go",
            "--junit",
            "junit.xml",
        ])
        .assert()
        .code(1);
    assert_eq!(ws.journal()["steps"]["need"]["status"], "failed");
    let junit = std::fs::read_to_string(ws.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("<failure message=\"expected == yes"),
        "{junit}"
    );
    server.cli(&["SET", "ready", "yes"]);
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["resume"])
        .assert()
        .success();
    assert_eq!(server.cli(&["GET", "runs"]).trim(), "1");
    ws.cmd()
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("status: succeeded"));
}

#[test]
fn a_missing_secret_stops_before_anything_runs() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: w, wait: { duration: 1ms } }\n",
    ));
    ws.cmd()
        .env_remove("RUN_TEST_PW")
        .args(["run", "runbook.yaml", "--yes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("secret `pw` is not available"));
    assert_eq!(server.cli(&["EXISTS", "runs"]).trim(), "0");
}

#[test]
fn a_changed_runbook_is_refused_by_plan_and_resume() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: w, wait: { duration: 1ms } }\n",
    ));
    ws.cmd()
        .args(["plan", "runbook.yaml", "--out", "plan.json"])
        .assert()
        .success();
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["run", "runbook.yaml"])
        .assert()
        .code(4);
    // Change a step already done.
    let text = std::fs::read_to_string(ws.path().join("runbook.yaml"))
        .unwrap()
        .replace("[INCR, runs]", "[INCRBY, runs, 2]");
    std::fs::write(ws.path().join("runbook.yaml"), text).unwrap();
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["run", "runbook.yaml", "--plan", "plan.json", "--yes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("changed since the plan"));
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["resume", "--approve", "go"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "changed in steps this run already did: count",
        ));
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["resume", "--approve", "go", "--force"])
        .assert()
        .success();
}

fn spawn_run(ws: &Workspace, args: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(ws.path())
        .env("NO_COLOR", "1")
        .env("RUN_TEST_PW", PW)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lock_contention_and_approval_of_a_waiting_run() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: w, wait: { duration: 1ms } }\n",
    ));
    let mut waiting = spawn_run(&ws, &["run", "runbook.yaml", "--wait-at-gates"]);
    wait_for("the run to reach its gate", || {
        ws.path().join(".redis-move/counter/runs").exists()
            && ws.journal()["steps"]["go"]["status"] == "running"
    });
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["run", "runbook.yaml", "--yes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "another run of `counter` is in progress",
        ));
    ws.cmd()
        .args(["lock", "status", "--runbook", "runbook.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("held by run"));
    ws.cmd()
        .args(["lock", "break", "--runbook", "runbook.yaml"])
        .assert()
        .code(1);
    let run_id = ws.journal()["run_id"].as_str().unwrap().to_owned();
    ws.cmd().args(["approve", &run_id, "go"]).assert().success();
    let status = waiting.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    ws.cmd()
        .args(["lock", "status", "--runbook", "runbook.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("free"));
}

#[test]
fn kill_9_mid_run_then_resume_finishes_without_rerunning() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: long, wait: { duration: 30s } }\n      - { id: after, redis.command: { args: [INCR, after] }, rollback: none }\n",
    ));
    let mut child = spawn_run(&ws, &["run", "runbook.yaml", "--yes"]);
    wait_for("the long wait to start", || {
        ws.path().join(".redis-move/counter/runs").exists()
            && ws.journal()["steps"]["long"]["status"] == "running"
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        ws.journal()["status"],
        "running",
        "a killed run leaves its journal as it was"
    );
    // The lock of the dead process is stale, not held.
    ws.cmd()
        .args(["lock", "status", "--runbook", "runbook.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("stale"));
    let text = std::fs::read_to_string(ws.path().join("runbook.yaml"))
        .unwrap()
        .replace("duration: 30s", "duration: 10ms");
    std::fs::write(ws.path().join("runbook.yaml"), text).unwrap();
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["resume", "--yes"])
        .assert()
        .success()
        .stderr(predicate::str::contains("took over a lock"));
    assert_eq!(server.cli(&["GET", "runs"]).trim(), "1");
    assert_eq!(server.cli(&["GET", "after"]).trim(), "1");
}

#[test]
fn sigint_stops_cleanly_and_resume_finishes() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: long, wait: { duration: 60s } }\n",
    ));
    let child = spawn_run(&ws, &["run", "runbook.yaml", "--yes"]);
    wait_for("the long wait to start", || {
        ws.path().join(".redis-move/counter/runs").exists()
            && ws.journal()["steps"]["long"]["status"] == "running"
    });
    let start = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(ws.journal()["status"], "interrupted");
    let text = std::fs::read_to_string(ws.path().join("runbook.yaml"))
        .unwrap()
        .replace("duration: 60s", "duration: 10ms");
    std::fs::write(ws.path().join("runbook.yaml"), text).unwrap();
    ws.cmd()
        .env("RUN_TEST_PW", PW)
        .args(["resume", "--yes"])
        .assert()
        .success();
    assert_eq!(server.cli(&["GET", "runs"]).trim(), "1");
}

#[test]
fn no_go_with_rollback_undoes_and_exits_3() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let runbook = format!(
        "version: 1\nname: nogo\nsecrets:\n  pw: {{ env: RUN_TEST_PW }}\ntargets:\n  r: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\" }} }}\nphases:\n  - id: change\n    steps:\n      - {{ id: policy, redis.config_set: {{ parameter: maxmemory-policy, value: allkeys-lru }} }}\n  - id: go\n    gate: {{ question: \"Keep it?\", on_no_go: rollback }}\nrollback:\n  - {{ id: verify, redis.config_get: {{ parameter: maxmemory-policy }}, expect: \"== noeviction\" }}\n",
        server.port
    );
    let ws = Workspace::new(&runbook);
    let mut waiting = spawn_run(&ws, &["run", "runbook.yaml", "--wait-at-gates"]);
    wait_for("the gate", || {
        ws.path().join(".redis-move/nogo/runs").exists()
            && ws.journal()["steps"]["go"]["status"] == "running"
    });
    assert_eq!(
        server
            .cli(&["CONFIG", "GET", "maxmemory-policy"])
            .lines()
            .nth(1)
            .unwrap(),
        "allkeys-lru"
    );
    let run_id = ws.journal()["run_id"].as_str().unwrap().to_owned();
    ws.cmd()
        .args(["approve", &run_id, "go", "--no-go"])
        .assert()
        .success();
    assert_eq!(waiting.wait().unwrap().code(), Some(3));
    assert_eq!(
        server
            .cli(&["CONFIG", "GET", "maxmemory-policy"])
            .lines()
            .nth(1)
            .unwrap(),
        "noeviction"
    );
    let journal = ws.journal();
    assert_eq!(journal["status"], "rolled_back");
    assert_eq!(journal["steps"]["policy"]["status"], "compensated");
    assert_eq!(journal["steps"]["verify"]["status"], "succeeded");
}

#[test]
fn the_terminal_reads_at_a_glance_the_operator_sizes_in_their_unit_and_no_null_values() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&counter_runbook(
        &server,
        "      - { id: memory, redis.info: { field: memory.used_memory }, expect: \"< 1gb\" }\n      - { id: pause, wait: { duration: 100ms } }\n",
    ));
    let done = ws
        .cmd()
        .env("RUN_TEST_PW", PW)
        .args(["--operator", "Alice Ops", "run", "runbook.yaml", "--yes"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&done.get_output().stderr).to_string();
    // `used_memory` beside `< 1gb` reads as a size, not as a count of bytes.
    let check = stderr
        .lines()
        .find(|l| l.contains("check memory:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let measured = check.rsplit("measured ").next().unwrap_or("");
    assert!(
        measured.ends_with(" MiB") || measured.ends_with(" KiB"),
        "{check}"
    );
    assert!(!stderr.contains("value null"), "{stderr}");
    // The operator is who --operator said, in the journal and at the gate.
    let journal = ws.journal();
    assert_eq!(journal["operator"], "Alice Ops");
    assert_eq!(journal["gates"][0]["who"], "Alice Ops");
}

#[test]
fn the_report_draws_the_timeline_and_each_trigger_s_values_against_its_threshold() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = Workspace::new(&format!(
        "version: 1\nname: pictured\nsecrets:\n  pw: {{ env: RUN_TEST_PW }}\ntargets:\n  r: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\" }} }}\nphases:\n  - id: change\n    steps:\n      - {{ id: flag, redis.command: {{ args: [SET, flag, \"on\"] }}, rollback: {{ redis.command: {{ args: [DEL, flag] }} }} }}\n  - id: go\n    gate: {{ question: \"Watch it?\" }}\n  - id: watch\n    steps:\n      - {{ id: wait-for-stop, redis.command: {{ args: [GET, stop], read_only: true }}, until: \"== yes\", timeout: 120s }}\ntriggers:\n  - {{ id: level, title: \"Level stays at 5 or below\", during: [watch], probe: {{ redis.command: {{ args: [GET, level], read_only: true }} }}, every: 200ms, fire: {{ when: \"> 5\" }} }}\n",
        server.port
    ));
    let _ = server.cli(&["SET", "level", "1"]);
    let mut child = spawn_run(&ws, &["run", "runbook.yaml", "--yes"]);
    wait_for("the watch", || {
        server
            .cli(&["INFO", "commandstats"])
            .contains("cmdstat_get:")
    });
    // The level climbs; at 9 the trigger fires and the run rolls back.
    for level in ["2", "3", "4", "9"] {
        std::thread::sleep(std::time::Duration::from_millis(600));
        let _ = server.cli(&["SET", "level", level]);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let run_dir = ws
        .path()
        .join(".redis-move/pictured/runs")
        .join(ws.journal()["run_id"].as_str().unwrap());
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    // The timeline: a bar per step, the gate, the trigger's firing, the rollback.
    assert!(html.contains(r#"class="timeline""#), "{html}");
    assert!(html.contains("gate go: Go by"), "{html}");
    assert!(
        html.contains(r##"stroke="#c62828" stroke-width="2"><title>level:"##),
        "{html}"
    );
    assert!(html.contains(">rollback</text>"), "{html}");
    // The trigger's chart: its values as a line, the threshold, the bad sample in red.
    let chart = &html[html.find(r#"aria-label="level""#).expect("the level chart")..];
    assert!(chart.contains("<polyline points="), "{chart}");
    assert!(chart.contains("threshold 5"), "{chart}");
    assert!(chart.matches("<circle").count() >= 3, "{chart}");
    assert!(chart.contains(r##"fill="#c62828"><title>"##), "{chart}");
    // Self-contained: nothing fetched, no script.
    for external in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!html.contains(external), "`{external}` in report.html");
    }
    assert!(!html.contains(PW), "the secret leaked");
    // Written again from the journal on disk, the chart is the same (the series are
    // in the snapshot written when the run stopped).
    std::fs::remove_file(run_dir.join("report.html")).unwrap();
    ws.cmd().args(["report"]).assert().success();
    assert_eq!(
        std::fs::read_to_string(run_dir.join("report.html"))
            .unwrap()
            .matches("<circle")
            .count(),
        html.matches("<circle").count()
    );
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("```mermaid\ngantt"), "{md}");
    assert!(md.contains("trigger level :crit, milestone"), "{md}");
    assert!(md.contains("section watch"), "{md}");
}
