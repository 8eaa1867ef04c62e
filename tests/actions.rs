//! The remaining actions and options, each run for real: Redis over TLS and a unix
//! socket, docker restart/remove/remove_volume, a pull that cannot reach a registry,
//! manual steps, HTTP POST, gate timeouts, `--from`, `skip_if`, JSON log lines.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use redis_move_testbed::{ContainerGuard, RedisServer, docker, tls, unique_name};

fn cmd(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("redis-move").unwrap();
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    cmd
}

fn write(dir: &Path, runbook: &str) {
    std::fs::write(dir.join("runbook.yaml"), runbook).unwrap();
}

fn journal(dir: &Path, name: &str) -> serde_json::Value {
    let runs = dir.join(".redis-move").join(name).join("runs");
    redis_move_testbed::workspace::read_journal(
        &redis_move_testbed::workspace::latest_run(&runs).unwrap(),
    )
    .unwrap()
}

#[test]
fn redis_over_tls_with_a_test_ca_and_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::make_certs(dir.path());
    let server = RedisServer::start_tls(&certs);
    let socket = dir.path().join("redis.sock");
    let _unix = RedisServer::start_unix(&socket);
    write(
        dir.path(),
        &format!(
            "version: 1\nname: tls\ntargets:\n  secure: {{ redis: {{ url: \"rediss://127.0.0.1:{}\", tls: {{ ca: ca.pem }} }} }}\n  untrusted: {{ redis: {{ url: \"rediss://127.0.0.1:{}\", connect_timeout: 2s }} }}\n  local: {{ redis: {{ url: \"unix://{}\" }} }}\nphases:\n  - id: p\n    steps:\n      - {{ id: tls-ping, redis.ping: {{ target: secure }}, expect: \"< 1s\" }}\n      - {{ id: unix-ping, redis.ping: {{ target: local }}, expect: \"< 1s\" }}\n      - {{ id: untrusted-ping, redis.ping: {{ target: untrusted }} }}\n",
            server.port,
            server.port,
            socket.display()
        ),
    );
    let out = cmd(dir.path())
        .args(["plan", "--check", "runbook.yaml"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("check:")).collect();
    assert!(lines[0].contains("check: passed"), "{out}");
    assert!(lines[1].contains("check: passed"), "{out}");
    assert!(
        lines[2].contains("check: ERROR"),
        "a certificate from an unknown CA is refused: {out}"
    );
}

#[test]
fn manual_steps_http_post_from_and_skip_if() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    // A tiny HTTP server that counts POSTs into Redis.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = listener.local_addr().unwrap().port();
    let redis_url = server.url();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            if request.starts_with("POST") {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-u", &redis_url, "INCR", "posts"])
                    .output();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            );
        }
    });
    server.cli(&["SET", "already", "yes"]);
    write(
        dir.path(),
        &format!(
            "version: 1\nname: misc\ntargets:\n  r: {{ redis: {{ url: \"{}\" }} }}\nphases:\n  - id: a\n    steps:\n      - {{ id: early, redis.command: {{ args: [INCR, early] }}, rollback: none }}\n  - id: b\n    steps:\n      - {{ id: dashboard, manual: {{ instruction: \"Set REDIS_URL in the dashboard\", by: admin }}, rollback: {{ manual: {{ instruction: undo }} }} }}\n      - {{ id: notify, http: {{ url: \"http://127.0.0.1:{http_port}/hook\", method: POST, body: cut, status: 201 }}, rollback: none }}\n      - id: once\n        redis.command: {{ args: [INCR, once] }}\n        rollback: none\n        skip_if: {{ redis.command: {{ args: [GET, already], read_only: true }}, expect: \"== yes\" }}\n",
            server.url()
        ),
    );
    // The manual step stops a non-interactive run (exit 4) until it is confirmed.
    cmd(dir.path())
        .args(["run", "runbook.yaml", "--from", "dashboard"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("MANUAL").or(predicate::str::contains("GATE dashboard")));
    assert_eq!(
        server.cli(&["EXISTS", "early"]).trim(),
        "0",
        "--from skipped the first phase"
    );
    cmd(dir.path())
        .args(["resume", "--approve", "dashboard", "--log-format", "json"])
        .assert()
        .success()
        .stdout(predicate::function(|out: &str| {
            out.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
                && out.contains("\"event\":\"run_finished\"")
        }));
    assert_eq!(server.cli(&["GET", "posts"]).trim(), "1");
    assert_eq!(
        server.cli(&["EXISTS", "once"]).trim(),
        "0",
        "skip_if saw the effect in place"
    );
    let j = journal(dir.path(), "misc");
    assert_eq!(j["steps"]["once"]["status"], "skipped");
    assert_eq!(j["steps"]["early"]["status"], "skipped");
    assert_eq!(j["gates"][0]["gate"], "dashboard");
}

#[test]
fn a_gate_that_times_out_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    write(
        dir.path(),
        &format!(
            "version: 1\nname: timeout\ntargets:\n  r: {{ redis: {{ url: \"{}\" }} }}\nphases:\n  - id: change\n    steps:\n      - {{ id: flag, redis.command: {{ args: [SET, flag, on] }}, rollback: {{ redis.command: {{ args: [DEL, flag] }} }} }}\n  - id: go\n    gate: {{ question: \"Keep?\", timeout: 1s, on_timeout: rollback }}\n",
            server.url()
        ),
    );
    cmd(dir.path())
        .args(["run", "runbook.yaml", "--wait-at-gates"])
        .assert()
        .code(3);
    assert_eq!(server.cli(&["EXISTS", "flag"]).trim(), "0");
    assert_eq!(
        journal(dir.path(), "timeout")["gates"][0]["how"],
        "timeout after 1s"
    );
}

#[tokio::test]
async fn docker_restart_remove_volume_and_a_pull_without_registry() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let image = docker::redis_image(&engine).await.reference;
    let name = unique_name("svc");
    let volume = unique_name("vol");
    let _guard = ContainerGuard::new([name.clone()]);
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "-v",
            &format!("{volume}:/data"),
            &image,
            "/usr/bin/redis-server",
            "--save",
            "",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let started_at = |n: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", n, "--format", "{{.State.StartedAt}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let before = started_at(&name);
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &format!(
            "version: 1\nname: lifecycle\ntargets:\n  d: {{ docker: {{}} }}\nphases:\n  - id: p\n    steps:\n      - {{ id: restart, docker.restart: {{ name: \"^{name}$\", timeout: 1s }} }}\n      - {{ id: running, docker.containers: {{ name: \"^{name}$\", state: running }}, expect: {{ count: 1 }} }}\n      - {{ id: remove, docker.remove: {{ name: \"^{name}$\", force: true }}, rollback: none }}\n      - {{ id: drop, docker.remove_volume: {{ name: \"{volume}\" }}, rollback: none }}\n      - {{ id: gone, docker.volumes: {{ name: \"^{volume}$\" }}, expect: empty }}\n  - id: pull\n    steps:\n      - {{ id: unreachable, docker.run: {{ image: \"registry.invalid/nothing:1\", rm: true, cmd: [x] }} }}\n"
        ),
    );
    let assert = cmd(dir.path())
        .args(["run", "runbook.yaml"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        stderr.contains("cannot pull `registry.invalid/nothing:1`"),
        "{stderr}"
    );
    assert!(stderr.contains("pull: never"), "{stderr}");
    let j = journal(dir.path(), "lifecycle");
    for step in ["restart", "running", "remove", "drop", "gone"] {
        assert_eq!(j["steps"][step]["status"], "succeeded", "{step}: {stderr}");
    }
    assert_ne!(before, "");
    let exists = std::process::Command::new("docker")
        .args(["inspect", &name])
        .output()
        .unwrap()
        .status
        .success();
    assert!(!exists);
}

#[test]
fn on_a_terminal_a_gate_shows_the_evidence_and_records_the_sign_off() {
    let Some(script) = redis_move_testbed::redis::which("script") else {
        panic!("`script` (util-linux) is needed to give the run a terminal");
    };
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start();
    write(
        dir.path(),
        &format!(
            "version: 1\nname: tty\ntargets:\n  r: {{ redis: {{ url: \"{}\" }} }}\nphases:\n  - id: pre\n    steps:\n      - {{ id: ping, redis.ping: {{}}, expect: \"< 1s\" }}\n  - id: go\n    gate: {{ question: \"Proceed?\", signoffs: [admin] }}\n",
            server.url()
        ),
    );
    let binary = assert_cmd::cargo::cargo_bin("redis-move");
    let mut child = std::process::Command::new(script)
        .args([
            "-qec",
            &format!("{} run runbook.yaml --no-progress", binary.display()),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(800));
        stdin.write_all(b"go\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(b"Alice\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{text}");
    assert!(text.contains("Evidence since the last gate:"), "{text}");
    assert!(text.contains("PASS ping:"), "{text}");
    assert!(text.contains("Sign-off `admin`"), "{text}");
    let j = journal(dir.path(), "tty");
    assert_eq!(j["gates"][0]["how"], "terminal");
    assert_eq!(j["gates"][0]["signoffs"][0]["who"], "Alice");
}
