//! The run lock shared across machines (`lock:`, a lease in Redis), end to end: two runs
//! of one runbook from two state directories (two "machines") against one lease Redis.
//! The second is refused with the holder's identity; a holder stopped past its lease
//! loses it to the next run, and its own next change is refused by the fencing check; a
//! run killed with `kill -9` leaves a lease that expires, after which `resume` takes
//! over. No fixed sleeps: the tests wait for what they need to see.

use std::time::Duration;

use redis_move_testbed::dataset::connect;
use redis_move_testbed::{RedisServer, Workspace, signal};

const LOCK_PASSWORD: &str = "Lease-Pw-7781";
const KEY: &str = "redis-move:lock:shared";

/// The runbook: a lease in `lock` (with a password, a secret), two changes to `data`
/// apart by a wait for the test's go (`SET go yes`).
fn runbook(lock: &RedisServer, data: &RedisServer) -> String {
    runbook_with(
        lock,
        data,
        "3s",
        r#"      - id: one
        redis.command: { target: data, args: [RPUSH, log, "${vars.who}-1"] }
        rollback: none
      - id: pause
        redis.command: { target: data, args: [GET, go], read_only: true }
        until: "== yes"
        timeout: 300s
      - id: two
        redis.command: { target: data, args: [RPUSH, log, "${vars.who}-2"] }
        rollback: none
"#,
    )
}

/// A runbook whose lease (`ttl`) is in `lock` (with a password, a secret), acting on
/// `data` with `steps` (YAML list items, indented six spaces).
fn runbook_with(lock: &RedisServer, data: &RedisServer, ttl: &str, steps: &str) -> String {
    format!(
        r#"version: 1
name: shared
vars:
  who: nobody
secrets:
  lock_pw: {{ env: LOCK_PW }}
lock: {{ redis: lockdb, ttl: {ttl} }}
targets:
  lockdb: {{ redis: {{ url: "redis://:${{secrets.lock_pw}}@127.0.0.1:{}" }} }}
  data: {{ redis: {{ url: "{}" }} }}
phases:
  - id: main
    steps:
{steps}"#,
        lock.port,
        data.url()
    )
}

fn log(data: &mut redis::Connection) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg("log")
        .arg(0)
        .arg(-1)
        .query(data)
        .unwrap()
}

/// Lets a run past its wait.
fn go(data: &mut redis::Connection) {
    let _: () = redis::cmd("SET").arg("go").arg("yes").query(data).unwrap();
}

/// Waits until the lease key is gone (it expired).
fn wait_for_expiry(lock: &mut redis::Connection) {
    Workspace::wait_for("the lease to expire", Duration::from_secs(60), || {
        !redis::cmd("EXISTS")
            .arg(KEY)
            .query::<bool>(lock)
            .unwrap_or(true)
    });
}

#[test]
fn a_second_machine_is_refused_and_a_stalled_holder_is_fenced_out() {
    let lock = RedisServer::start_with(Some(LOCK_PASSWORD), &[]);
    let data = RedisServer::start();
    let mut lock_con = connect(&lock.url());
    let mut data_con = connect(&data.url());
    let machine_a = Workspace::new(&runbook(&lock, &data)).with_env("LOCK_PW", LOCK_PASSWORD);
    let machine_b = Workspace::new(&runbook(&lock, &data)).with_env("LOCK_PW", LOCK_PASSWORD);
    let a = machine_a.spawn(&["run", "runbook.yaml", "--no-progress", "--var", "who=A"]);
    Workspace::wait_for("A's first change", Duration::from_secs(60), || {
        log(&mut data_con) == ["A-1"]
    });
    // B, from its own state directory, is refused with A's identity; nothing changes.
    let refused = machine_b
        .cmd(&["run", "runbook.yaml", "--no-progress", "--var", "who=B"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("holds its lock in Redis")
            && stderr.contains(&format!("pid {}", a.id()))
            && stderr.contains("fencing token 1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(LOCK_PASSWORD),
        "the password leaked: {stderr}"
    );
    assert_eq!(log(&mut data_con), ["A-1"]);
    let status = machine_b
        .cmd(&["lock", "status", "--runbook", "runbook.yaml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("pid {}", a.id())), "{text}");
    // A stalls (a laptop lid closed) past its lease; B takes the lock and runs.
    signal(a.id(), "-STOP");
    wait_for_expiry(&mut lock_con);
    let b = machine_b.spawn(&["run", "runbook.yaml", "--no-progress", "--var", "who=B"]);
    Workspace::wait_for("B's first change", Duration::from_secs(60), || {
        log(&mut data_con) == ["A-1", "B-1"]
    });
    // A wakes up: its next change is refused by the fencing check, and it stops.
    signal(a.id(), "-CONT");
    go(&mut data_con);
    let a_out = a.wait_with_output().unwrap();
    let a_err = String::from_utf8_lossy(&a_out.stderr);
    assert_eq!(a_out.status.code(), Some(130), "{a_err}");
    // B may still hold the lease when A checks, or may have finished and given it up
    // (the counter still says another run took it): refused either way.
    let held =
        a_err.contains("held by another run now") && a_err.contains("this run (fencing token 1)");
    let taken =
        a_err.contains("expired and was taken since") && a_err.contains("fencing token beyond 1");
    assert!(
        a_err.contains("refused before it changed anything") && (held || taken),
        "{a_err}"
    );
    let b_out = b.wait_with_output().unwrap();
    assert!(
        b_out.status.success(),
        "{}",
        String::from_utf8_lossy(&b_out.stderr)
    );
    assert_eq!(log(&mut data_con), ["A-1", "B-1", "B-2"]);
    // B gave the lease up when it ended.
    assert!(
        !redis::cmd("EXISTS")
            .arg(KEY)
            .query::<bool>(&mut lock_con)
            .unwrap()
    );
}

#[test]
fn a_lease_left_by_a_killed_run_expires_and_the_resume_takes_over() {
    let lock = RedisServer::start_with(Some(LOCK_PASSWORD), &[]);
    let data = RedisServer::start();
    let mut lock_con = connect(&lock.url());
    let mut data_con = connect(&data.url());
    let machine = Workspace::new(&runbook(&lock, &data)).with_env("LOCK_PW", LOCK_PASSWORD);
    let mut run = machine.spawn(&["run", "runbook.yaml", "--no-progress", "--var", "who=C"]);
    Workspace::wait_for("the first change", Duration::from_secs(60), || {
        log(&mut data_con) == ["C-1"]
    });
    run.kill().unwrap();
    run.wait().unwrap();
    go(&mut data_con);
    // While the dead run's lease lives, even its own resume is refused: the lease alone
    // cannot tell a dead holder from a stalled one.
    let early = machine
        .cmd(&["resume", "--no-progress", "--var", "who=C"])
        .output()
        .unwrap();
    if redis::cmd("EXISTS")
        .arg(KEY)
        .query::<bool>(&mut lock_con)
        .unwrap()
    {
        assert_eq!(
            early.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&early.stderr)
        );
        assert_eq!(log(&mut data_con), ["C-1"]);
    }
    wait_for_expiry(&mut lock_con);
    let resumed = machine
        .cmd(&["resume", "--no-progress", "--var", "who=C"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert_eq!(log(&mut data_con), ["C-1", "C-2"]);
}

#[test]
fn a_forced_break_stops_the_holder_before_its_next_attempt() {
    let lock = RedisServer::start_with(Some(LOCK_PASSWORD), &[]);
    let data = RedisServer::start();
    let mut data_con = connect(&data.url());
    let ws = Workspace::new(&runbook_with(
        &lock,
        &data,
        "30s",
        r#"      - id: bump
        redis.command: { target: data, args: [INCR, counter] }
        expect: ">= 1000"
        retry: { attempts: 1000, interval: 100ms }
        rollback: none
"#,
    ))
    .with_env("LOCK_PW", LOCK_PASSWORD);
    let run = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    let counter = |con: &mut redis::Connection| -> i64 {
        redis::cmd("GET")
            .arg("counter")
            .query::<Option<i64>>(con)
            .unwrap()
            .unwrap_or(0)
    };
    Workspace::wait_for("a few attempts", Duration::from_secs(60), || {
        counter(&mut data_con) >= 3
    });
    // The holder lives; the lease is broken anyway (the operator knows better).
    let broke = ws
        .cmd(&["lock", "break", "--force", "--runbook", "runbook.yaml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&broke.stdout);
    assert!(broke.status.success(), "{text}");
    assert!(text.contains("broke the lease"), "{text}");
    let at_break = counter(&mut data_con);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("refused before this attempt changed anything"),
        "{stderr}"
    );
    // At most the attempt already past its check when the lease was broken.
    let end = counter(&mut data_con);
    assert!(end <= at_break + 1, "{end} after {at_break}");
}
