//! `redis.replicate` and `redis.promote` against real redis-server processes: a full
//! sync while a writer keeps writing, promotion once offsets match, reverse replication
//! during the watch, and a rollback that brings every write made on the new primary back
//! to the old one.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_move_testbed::RedisServer;
use redis_move_testbed::producer::{Acked, Producer};

fn spawn(dir: &Path) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("REPL_PW", "Repl-Pw-5")
        .args(["run", "runbook.yaml", "--wait-at-gates", "--no-progress"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Writes `runbook.yaml` into `dir`: the Redis targets `old` and `new` on these loopback
/// ports, authenticated with the secret `pw` (`REPL_PW`), then `body` (its `phases:`
/// and what follows).
fn write_runbook(dir: &Path, old: u16, new: u16, body: &str) {
    std::fs::write(
        dir.join("runbook.yaml"),
        format!(
            "version: 1\nname: repl\nsecrets:\n  pw: {{ env: REPL_PW }}\ntargets:\n  old: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{old}\" }} }}\n  new: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{new}\" }} }}\n{body}"
        ),
    )
    .unwrap();
}

fn journal(dir: &Path) -> Option<serde_json::Value> {
    redis_move_testbed::workspace::read_journal(&redis_move_testbed::workspace::latest_run(
        &dir.join(".redis-move/repl/runs"),
    )?)
}

fn wait_gate(dir: &Path, gate: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(j) = journal(dir)
            && j["steps"][gate]["status"] == "running"
        {
            return j["run_id"].as_str().unwrap().to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gate {gate} not reached: {:?}",
            journal(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn approve(dir: &Path, run: &str, gate: &str, no_go: bool) {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"));
    cmd.current_dir(dir).args(["approve", run, gate]);
    if no_go {
        cmd.arg("--no-go");
    }
    assert!(cmd.output().unwrap().status.success());
}

#[test]
fn replicate_with_writes_promote_with_reverse_and_roll_back_without_losing_a_write() {
    let source = RedisServer::start_with(Some("Repl-Pw-5"), &["--enable-debug-command", "yes"]);
    let target = RedisServer::start_with(Some("Repl-Pw-5"), &[]);
    source.cli(&["DEBUG", "POPULATE", "20000", "key", "64"]);
    // A writer that keeps writing to the source during the sync.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let writing = writing.clone();
        let written = written.clone();
        let url = source.url();
        std::thread::spawn(move || {
            let client = redis::Client::open(url).unwrap();
            let mut con = client.get_connection().unwrap();
            while writing.load(Ordering::Relaxed) {
                let n = written.fetch_add(1, Ordering::Relaxed) + 1;
                let _: () = redis::cmd("SET")
                    .arg(format!("written:{n}"))
                    .arg(n)
                    .query(&mut con)
                    .unwrap();
                let _: i64 = redis::cmd("INCR").arg("counter").query(&mut con).unwrap();
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    write_runbook(
        dir.path(),
        source.port,
        target.port,
        r#"phases:
  - id: sync
    steps:
      - id: replicate
        redis.replicate: { target: new, source: old, timeout: 2min }
        expect: { master_link_status: "== up" }
  - id: writers-stopped
    gate: { question: "Writers stopped?" }
  - id: cutover
    steps:
      - id: promote
        redis.promote: { target: new, source: old, reverse: true, timeout: 1min }
      - id: new-is-primary
        redis.info: { target: new, field: replication.role }
        expect: "== master"
  - id: watch
    gate: { question: "Keep the new server?", on_no_go: rollback }
rollback:
  - id: old-is-primary
    redis.info: { target: old, field: replication.role }
    expect: "== master"
"#,
    );
    let child = spawn(dir.path());
    let run = wait_gate(dir.path(), "writers-stopped");
    let role = target.cli(&["INFO", "replication"]);
    assert!(
        role.contains("role:slave"),
        "target not a replica at the gate: {role}"
    );
    // The writers stop; the replica must catch up with every write before promotion.
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let total = written.load(Ordering::Relaxed);
    assert!(total > 0, "the writer wrote during the sync");
    approve(dir.path(), &run, "writers-stopped", false);
    wait_gate(dir.path(), "watch");
    assert_eq!(
        target.cli(&["GET", "counter"]).trim(),
        total.to_string(),
        "every write before the cutover is on the new primary"
    );
    assert!(
        source.cli(&["INFO", "replication"]).contains("role:slave"),
        "reverse replication: the old primary follows the new one"
    );
    // Writes on the new primary after the cutover...
    for i in 0..50 {
        target.cli(&["SET", &format!("after-cutover:{i}"), "x"]);
    }
    target.cli(&["INCRBY", "counter", "1000"]);
    // ...then no-go: roll back to the old primary.
    approve(dir.path(), &run, "watch", true);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(source.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(
        source.cli(&["GET", "counter"]).trim(),
        (total + 1000).to_string(),
        "the old primary has every write"
    );
    assert_eq!(source.cli(&["EXISTS", "after-cutover:49"]).trim(), "1");
    assert_eq!(
        source.cli(&["DBSIZE"]).trim(),
        target.cli(&["DBSIZE"]).trim()
    );
    // The whole run is undone: the replication it set up too (the new server is on its own).
    assert!(target.cli(&["INFO", "replication"]).contains("role:master"));
    assert!(
        source
            .cli(&["INFO", "replication"])
            .contains("connected_slaves:0")
    );
    assert!(!stderr.contains("Repl-Pw-5"));
    let j = journal(dir.path()).unwrap();
    assert_eq!(j["steps"]["promote"]["status"], "compensated");
    assert_eq!(j["steps"]["old-is-primary"]["status"], "succeeded");
    assert!(
        !serde_json::to_string(&j).unwrap().contains("Repl-Pw-5"),
        "the password is not in the journal"
    );
}

/// Acknowledged writes missing from `server`.
fn missing(acked: &[Acked], server: &RedisServer) -> Vec<String> {
    redis_move_testbed::producer::missing_from(acked, server, "produced")
}

#[test]
fn a_producer_writing_through_promote_and_rollback_loses_no_acknowledged_write() {
    let source = RedisServer::start_with(Some("Repl-Pw-5"), &[]);
    let target = RedisServer::start_with(Some("Repl-Pw-5"), &[]);
    let mut producer = Producer::start(vec![source.url(), target.url()], "produced", "p", None);
    let dir = tempfile::tempdir().unwrap();
    write_runbook(
        dir.path(),
        source.port,
        target.port,
        r#"phases:
  - id: sync
    steps:
      - id: replicate
        redis.replicate: { target: new, source: old, timeout: 2min }
  - id: cutover
    steps:
      - id: promote
        redis.promote: { target: new, source: old, reverse: true, pause: 20s, timeout: 2min }
  - id: watch
    gate: { question: "Keep the new server?", on_no_go: rollback }
"#,
    );
    let child = spawn(dir.path());
    let run = wait_gate(dir.path(), "watch");
    // The producer never stopped: every write acknowledged so far is on the new primary.
    let acked = producer.acked();
    assert!(
        target.cli(&["INFO", "replication"]).contains("role:master"),
        "the new server is the primary"
    );
    assert_eq!(
        missing(&acked, &target),
        Vec::<String>::new(),
        "lost at promote"
    );
    let j = journal(dir.path()).unwrap();
    let value = &j["steps"]["promote"]["value"];
    eprintln!("promote: {value}");
    assert_eq!(
        value["object"]["drained"],
        serde_json::json!({"bool": true}),
        "{value}"
    );
    assert_eq!(value["object"]["resync"]["text"], "partial", "{value}");
    // Keep writing to the new primary for a while, then roll back with the producer on.
    let on_target = producer.acked().len();
    let start = Instant::now();
    while producer.acked().len() < on_target + 2000 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the producer stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    approve(dir.path(), &run, "watch", true);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    // A moment of writes on the old primary after the rollback, then stop.
    let back = producer.acked().len();
    let start = Instant::now();
    while producer.acked().len() < back + 500 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the producer stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    producer.stop();
    let acked = producer.acked();
    assert!(source.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(
        missing(&acked, &source),
        Vec::<String>::new(),
        "lost at rollback"
    );
    let rejected = producer.rejected();
    let j = journal(dir.path()).unwrap();
    eprintln!(
        "acknowledged {} writes, rejected {rejected} (READONLY/NOREPLICAS), none lost; rollback: {}",
        acked.len(),
        j["rollback"]
    );
    assert!(acked.len() > 3000);
}

#[test]
fn replicate_waits_for_a_target_that_is_still_loading() {
    let source = RedisServer::start_with(Some("Repl-Pw-5"), &["--enable-debug-command", "yes"]);
    source.cli(&["DEBUG", "POPULATE", "1000", "src", "16"]);
    // A target that loads 50,000 keys slowly (40 us each) when it starts, answering
    // LOADING meanwhile, as after a restart or a full sync cut by a killed run.
    let data = tempfile::tempdir().unwrap();
    {
        let dir = data.path().to_str().unwrap();
        let seed = RedisServer::start_with(None, &["--dir", dir, "--enable-debug-command", "yes"]);
        seed.cli(&["DEBUG", "POPULATE", "50000", "old", "16"]);
        seed.cli(&["SAVE"]);
    }
    let port = redis_move_testbed::free_port();
    let mut loading = std::process::Command::new(redis_move_testbed::redis::redis_server_binary())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--requirepass", "Repl-Pw-5", "--key-load-delay", "40"])
        .args(["--loading-process-events-interval-bytes", "1024"])
        .arg("--dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let answer = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "-a",
                "Repl-Pw-5",
                "--no-auth-warning",
            ])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    while !answer(&["PING"]).contains("LOADING") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the target never said LOADING"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = tempfile::tempdir().unwrap();
    write_runbook(
        dir.path(),
        source.port,
        port,
        r#"phases:
  - id: sync
    steps:
      - id: replicate
        redis.replicate: { target: new, source: old, timeout: 2min }
        expect: { keys: "== 1000" }
"#,
    );
    let output = spawn(dir.path()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = loading.kill();
    let _ = loading.wait();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("loading its dataset"),
        "the wait was reported: {stderr}"
    );
}

#[test]
fn where_client_pause_is_refused_the_promote_fences_the_old_primary_and_loses_nothing() {
    // CLIENT renamed away, as some managed services do: the drain falls back to the
    // fence (writers refused, not paused, during the drain).
    let source = RedisServer::start_with(Some("Repl-Pw-5"), &["--rename-command", "CLIENT", ""]);
    let target = RedisServer::start_with(Some("Repl-Pw-5"), &[]);
    let mut producer = Producer::start(vec![source.url(), target.url()], "produced", "p", None);
    let dir = tempfile::tempdir().unwrap();
    write_runbook(
        dir.path(),
        source.port,
        target.port,
        r#"phases:
  - id: move
    steps:
      - id: replicate
        redis.replicate: { target: new, source: old, timeout: 2min }
      - id: promote
        redis.promote: { target: new, source: old, pause: 20s, timeout: 2min }
"#,
    );
    // plan --check says so before the run.
    let plan = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(dir.path())
        .env("REPL_PW", "Repl-Pw-5")
        .args(["plan", "runbook.yaml", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("offers no CLIENT PAUSE WRITE"), "{text}");
    let output = spawn(dir.path()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    producer.wait_for_more(200, Duration::from_secs(60));
    let acked = producer.stop();
    assert_eq!(
        missing(&acked, &target),
        Vec::<String>::new(),
        "lost at promote"
    );
    let value = &journal(dir.path()).unwrap()["steps"]["promote"]["value"]["object"];
    eprintln!("promote: {value}");
    assert_eq!(value["hold"]["text"], "fence", "{value}");
    assert_eq!(value["old_primary"]["text"], "fenced", "{value}");
    assert!(
        value["note"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("CLIENT PAUSE WRITE was refused"),
        "{value}"
    );
    // Without reverse replication the old primary stays fenced: it refuses writes.
    let refused = source.cli(&["SET", "late", "write"]);
    assert!(
        refused.contains("NOREPLICAS") || refused.is_empty(),
        "{refused}"
    );
    assert_eq!(source.cli(&["EXISTS", "late"]).trim(), "0");
}

#[test]
fn a_promote_whose_target_replicates_another_server_changes_nothing() {
    let source = RedisServer::start_with(Some("Repl-Pw-5"), &["--enable-debug-command", "yes"]);
    let other = RedisServer::start_with(Some("Repl-Pw-5"), &["--enable-debug-command", "yes"]);
    let target = RedisServer::start_with(Some("Repl-Pw-5"), &["--masterauth", "Repl-Pw-5"]);
    source.cli(&["DEBUG", "POPULATE", "2900", "mine", "8"]);
    other.cli(&["DEBUG", "POPULATE", "100", "theirs", "8"]);
    target.cli(&["REPLICAOF", "127.0.0.1", &other.port.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    write_runbook(
        dir.path(),
        source.port,
        target.port,
        r#"phases:
  - id: cutover
    steps:
      - id: promote
        redis.promote: { target: new, source: old, reverse: true, timeout: 30s }
"#,
    );
    let output = spawn(dir.path()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not replicate the source"), "{stderr}");
    assert!(source.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(
        source.cli(&["DBSIZE"]).trim(),
        "2900",
        "the source kept its data"
    );
    assert_eq!(
        source
            .cli(&["CONFIG", "GET", "min-replicas-to-write"])
            .lines()
            .nth(1),
        Some("0"),
        "not left fenced"
    );
}

#[test]
fn a_password_written_in_a_url_stays_masked_when_a_server_shows_it_back() {
    let source = RedisServer::start_with(Some("Lit%Pw:42"), &[]);
    let target = RedisServer::start_with(Some("Lit%Pw:42"), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runbook.yaml"),
        format!(
            "version: 1\nname: repl\ntargets:\n  old: {{ redis: {{ url: \"redis://:Lit%25Pw%3A42@127.0.0.1:{}\" }} }}\n  new: {{ redis: {{ url: \"redis://:Lit%25Pw%3A42@127.0.0.1:{}\" }} }}\nphases:\n  - id: p\n    steps:\n      - id: replicate\n        redis.replicate: {{ target: new, source: old, timeout: 1min }}\n      - id: readback\n        redis.command: {{ target: new, args: [CONFIG, GET, masterauth], read_only: true }}\n",
            source.port, target.port
        ),
    )
    .unwrap();
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(dir.path())
        .args(["run", "runbook.yaml", "--no-progress", "-vv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("readback"), "{stderr}");
    let mut texts = vec![stderr.into_owned()];
    for entry in walk(&dir.path().join(".redis-move")) {
        texts.push(std::fs::read_to_string(entry).unwrap_or_default());
    }
    for text in &texts {
        assert!(
            !text.contains("Lit%Pw:42"),
            "decoded password leaked: {text}"
        );
        assert!(
            !text.contains("Lit%25Pw%3A42"),
            "encoded password leaked: {text}"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// One server under two target names: `redis.replicate` refuses before `REPLICAOF`,
/// which would leave the server a replica of itself refusing every write.
#[test]
fn replicating_a_server_onto_itself_under_another_name_is_refused() {
    let server = redis_move_testbed::RedisServer::start();
    let ws = redis_move_testbed::Workspace::new(&format!(
        r#"version: 1
name: self-replica
targets:
  a: {{ redis: {{ url: "redis://127.0.0.1:{p}" }} }}
  b: {{ redis: {{ url: "redis://localhost:{p}/0" }} }}
phases:
  - id: sync
    steps:
      - {{ id: replicate, redis.replicate: {{ target: b, source: a, source_address: "127.0.0.1:{p}", timeout: 10s }} }}
"#,
        p = server.port
    ));
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("are the same server"), "{stderr}");
    let role = server.cli(&["ROLE"]);
    assert!(role.starts_with("master"), "{role}");
}
