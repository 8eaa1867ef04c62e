//! `notify:` webhooks end to end: a run with a gate and a rollback tells a webhook
//! receiver of every event (JSON and Slack bodies), with a secret in the webhook's path
//! that appears nowhere else; a webhook that accepts connections and never answers does
//! not hold the run back by more than its timeout, once, and its failures are in the
//! journal.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use redis_move_testbed::http::{HttpStub, Route};
use redis_move_testbed::{RedisServer, Workspace};

const HOOK_SECRET: &str = "T0KEN-S3CRET-4471";
const QUERY_SECRET: &str = "SIG-S3CRET-9902";

/// A server that accepts connections and never answers (they are held open).
fn tarpit() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    port
}

#[test]
fn every_event_of_a_gated_run_that_rolls_back_reaches_the_webhooks() {
    let redis = RedisServer::start();
    let stub = HttpStub::start(
        vec![Route::new(&format!("/hook/{HOOK_SECRET}"), 200, "{}")],
        None,
    );
    let hang = tarpit();
    let ws = Workspace::new(&format!(
        r#"version: 1
name: notified
secrets:
  hook: {{ env: HOOK_URL }}
  dead: {{ env: DEAD_URL }}
notify:
  - webhook: "${{secrets.hook}}"
  - webhook: "${{secrets.hook}}"
    format: slack
    events: [gate_waiting, run_finished]
  - webhook: "http://127.0.0.1:{hang}/never"
    timeout: 2s
  - webhook: "${{secrets.dead}}"
    events: [run_started]
targets:
  r: {{ redis: {{ url: "{}" }} }}
phases:
  - id: change
    steps:
      - id: flag
        redis.command: {{ args: [SET, flag, "on"] }}
        expect: "== OK"
        rollback: {{ redis.command: {{ args: [DEL, flag] }} }}
  - id: go
    gate: {{ question: "Is the flag set?" }}
  - id: check
    on_failure: rollback
    steps:
      - id: fails
        redis.command: {{ args: [GET, flag], read_only: true }}
        expect: "== off"
"#,
        redis.url()
    ))
    .with_env(
        "HOOK_URL",
        &format!("{}/hook/{HOOK_SECRET}", stub.url(false)),
    )
    // Nothing listens there: its deliveries fail, and say why without the URL.
    .with_env(
        "DEAD_URL",
        &format!(
            "http://127.0.0.1:{}?sig={QUERY_SECRET}",
            redis_move_testbed::free_port()
        ),
    );
    // No terminal and no approval: the run stops at the gate (somebody must come).
    let started = Instant::now();
    let first = ws
        .cmd(&["run", "runbook.yaml", "--no-progress"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let mut stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert_eq!(first.status.code(), Some(4), "{stderr}");
    // Blocking deliveries to the silent webhook would take 3 tries x 2 s for each of
    // its events; the run gave it one timeout at the end.
    assert!(took < Duration::from_secs(20), "the run took {took:?}");
    // Approved from elsewhere, the resumed run passes the gate (nobody is told it
    // waits: it does not), fails its check and rolls back.
    let run_id = ws.journal().unwrap()["run_id"].as_str().unwrap().to_owned();
    ws.cmd(&["approve", &run_id, "go"]).assert().success();
    let started = Instant::now();
    let resumed = ws.cmd(&["resume", "--no-progress"]).output().unwrap();
    let took = started.elapsed();
    stderr.push_str(&String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(resumed.status.code(), Some(3), "{stderr}");
    assert!(took < Duration::from_secs(20), "the resume took {took:?}");
    let bodies = stub.bodies.lock().unwrap().clone();
    let json: Vec<serde_json::Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .filter(|b| b.get("event").is_some())
        .collect();
    let events: Vec<&str> = json.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "run_started",
            "gate_waiting",
            "run_finished",
            "run_started",
            "rollback_started",
            "rollback_finished",
            "run_finished"
        ],
        "{bodies:#?}"
    );
    let gate = &json[1];
    assert_eq!(gate["step"], "go");
    let text = gate["text"].as_str().unwrap();
    assert!(
        text.contains("Is the flag set?")
            && text.contains("PASS flag")
            && text.contains(&format!(
                "redis-move approve {} go",
                gate["run_id"].as_str().unwrap()
            )),
        "{text}"
    );
    let slack: Vec<String> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .filter(|b| b.get("event").is_none())
        .filter_map(|b| b["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(slack.len(), 3, "{bodies:#?}");
    assert!(slack[0].contains("waits for a decision"), "{slack:?}");
    assert!(slack[1].contains("StoppedAtGate"), "{slack:?}");
    assert!(slack[2].contains("RolledBack"), "{slack:?}");
    // Every delivery is in the journal: the receiver's, and the silent one's failures.
    let journal = ws.journal().unwrap();
    let records = journal["notifications"].as_array().unwrap();
    let delivered = records.iter().filter(|r| r["delivered"] == true).count();
    assert_eq!(delivered, 10, "{records:#?}");
    let silent: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["webhook"] == format!("#3 http://127.0.0.1:{hang}"))
        .collect();
    assert!(!silent.is_empty(), "{records:#?}");
    assert!(
        silent.iter().all(|r| r["delivered"] == false),
        "{silent:#?}"
    );
    let dead: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["webhook"].as_str().unwrap().starts_with("#4 "))
        .collect();
    assert_eq!(dead.len(), 2, "{records:#?}");
    assert!(
        dead.iter().all(|r| r["delivered"] == false
            && r["attempts"] == 3
            && r["detail"].as_str().unwrap().contains("could not connect")),
        "{dead:#?}"
    );
    // The webhook's secret path is nowhere but in the requests it received.
    let run_dir =
        redis_move_testbed::workspace::latest_run(&ws.path().join(".redis-move/notified/runs"))
            .unwrap();
    for text in [
        redis_move_testbed::workspace::journal_text(&run_dir),
        std::fs::read_to_string(run_dir.join("report.md")).unwrap(),
        stderr,
    ] {
        assert!(!text.contains(HOOK_SECRET), "the webhook's secret leaked");
        assert!(
            !text.contains(QUERY_SECRET),
            "the webhook's query secret leaked"
        );
    }
}
