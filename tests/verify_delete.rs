//! `redis.verify` and `redis.delete` end to end against real redis-server processes:
//! a verification that passes after a copy and catches a corrupted value, a wrong TTL
//! and a missing key (with `DEBUG DIGEST-VALUE` and with client-side digests); sampling;
//! a rate-limited delete that touches nothing else; the count `plan --check` shows.

use std::time::{Duration, Instant};

use redis::Commands;
use redis_move_testbed::dataset::{self, connect};
use redis_move_testbed::{RedisServer, Workspace};

fn runbook(name: &str, source: &RedisServer, target: &RedisServer, steps: &str) -> String {
    Workspace::two_redis_runbook(name, source.port, target.port, steps)
}

fn verify_catches_corruption(digest: &str, extra: &[&str]) {
    let source = RedisServer::start_with(None, extra);
    let target = RedisServer::start_with(None, extra);
    let mut src = connect(&source.url());
    dataset::load_every_type(&mut src, "t:");
    let copy_and_verify = runbook(
        "verify",
        &source,
        &target,
        &format!(
            "      - {{ id: copy, redis.copy: {{ source: src, target: dst, chunk_above: 64kb }} }}\n      - {{ id: check, redis.verify: {{ source: src, target: dst, digest: {digest} }} }}\n"
        ),
    );
    let ws = Workspace::new(&copy_and_verify);
    ws.run().success();
    assert_eq!(
        ws.value_number("check", "checked"),
        dataset::EVERY_TYPE_KEYS as f64
    );
    assert_eq!(ws.value_number("check", "mismatched"), 0.0);
    let journal = ws.journal().unwrap();
    assert_eq!(
        journal["steps"]["check"]["value"]["object"]["digest"]["text"],
        digest
    );

    // Corrupt the copy: one value, one TTL, one key gone.
    let mut dst = connect(&target.url());
    let _: () = dst.hset("t:hash:big", "f17", "tampered").unwrap();
    let _: () = dst.expire("t:str", 900).unwrap();
    let _: () = dst.del("t:list:small").unwrap();
    let only_verify = runbook(
        "verify-again",
        &source,
        &target,
        &format!(
            "      - {{ id: check, redis.verify: {{ source: src, target: dst, digest: {digest} }} }}\n"
        ),
    );
    let ws = Workspace::new(&only_verify);
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("1 missing and 2 different on the target, of 14 keys checked"),
        "{stderr}"
    );
    assert!(stderr.contains("t:list:small: missing"), "{stderr}");
    assert!(stderr.contains("t:hash:big: value differs"), "{stderr}");
    assert!(
        stderr.contains("t:str: TTL 1") && stderr.contains(", expected none"),
        "{stderr}"
    );
}

#[test]
fn verify_with_debug_digests_passes_then_catches_corruption() {
    verify_catches_corruption("debug", &["--enable-debug-command", "yes"]);
}

#[test]
fn verify_with_client_digests_passes_then_catches_corruption() {
    verify_catches_corruption("client", &[]);
}

#[test]
fn verify_auto_falls_back_to_client_digests_where_debug_is_disabled() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    for i in 0..3000 {
        let _: () = src.set(format!("k:{i}"), i).unwrap();
    }
    let ws = Workspace::new(&runbook(
        "sample",
        &source,
        &target,
        "      - { id: copy, redis.copy: { source: src, target: dst } }\n      - { id: check, redis.verify: { source: src, target: dst, sample: 100 } }\n",
    ));
    ws.run().success();
    assert_eq!(ws.value_number("check", "checked"), 100.0);
    assert_eq!(ws.value_number("check", "source_keys"), 3000.0);
    assert_eq!(ws.value_number("check", "target_keys"), 3000.0);
    let journal = ws.journal().unwrap();
    assert_eq!(
        journal["steps"]["check"]["value"]["object"]["digest"]["text"],
        "client"
    );
}

#[test]
fn delete_removes_only_matching_keys_at_the_rate_asked_and_plan_check_counts_them() {
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SET").arg(format!("job:{i}")).arg(i).ignore();
        pipe.cmd("SET").arg(format!("step:{i}")).arg(i).ignore();
    }
    pipe.cmd("RPUSH").arg("job:list").arg("a").ignore();
    let () = pipe.query(&mut con).unwrap();
    let ws = Workspace::new(&format!(
        r#"version: 1
name: cleanup
targets:
  r: {{ redis: {{ url: "redis://127.0.0.1:{p}" }} }}
phases:
  - id: cleanup
    steps:
      - id: save
        redis.command: {{ target: r, args: [SAVE] }}
        rollback: none
      - id: delete-jobs
        redis.delete: {{ target: r, match: "job:*", type: string, backup: save, rate: 2000 }}
        rollback: none
"#,
        p = server.port
    ));
    let plan = ws
        .cmd(&["plan", "runbook.yaml", "--check"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&plan.get_output().stdout).to_string();
    assert!(text.contains("would delete 3000 keys"), "{text}");
    let started = Instant::now();
    ws.run().success();
    // 3,000 keys at 2,000 a second cannot take less than 1.5 s.
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(ws.value_number("delete-jobs", "deleted"), 3000.0);
    let jobs: Vec<String> = con.keys("job:*").unwrap();
    assert_eq!(
        jobs,
        vec!["job:list".to_owned()],
        "only strings were deleted"
    );
    let steps: usize = con.keys::<_, Vec<String>>("step:*").unwrap().len();
    assert_eq!(steps, 3000);
}
