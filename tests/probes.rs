//! Every read-only action against real systems: redis-server processes and a Docker
//! Engine (containers from an image built locally). No mocks.

use std::collections::HashMap;
use std::time::Duration;

use redis_move::actions::ActionError;
use redis_move::actions::connections::Connections;
use redis_move::actions::probe::{ProbeContext, probe};
use redis_move::actions::resolve::{Resolver, Secrets};
use redis_move::backend::BackendError;
use redis_move::backend::redis::RedisBackend;
use redis_move::runbook::{Runbook, SourceFile, load_source};
use redis_move::value::Value;
use redis_move_testbed::{ContainerGuard, RedisServer, docker, unique_name};

fn runbook(yaml: &str) -> Runbook {
    let loaded = load_source(SourceFile::new("probe-test.yaml", yaml), &[]);
    let errors: Vec<_> = loaded
        .diagnostics
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect();
    loaded
        .runbook
        .unwrap_or_else(|| panic!("invalid test runbook: {errors:?}"))
}

async fn run_step(runbook: &Runbook, id: &str) -> Result<Value, ActionError> {
    redis_move::backend::install_crypto_provider();
    let secrets = Secrets::load(&runbook.secrets, std::path::Path::new("."));
    let redactor = secrets.redactor();
    let connections = Connections::new(runbook);
    let values: HashMap<String, Value> = HashMap::new();
    let ctx = ProbeContext {
        connections: &connections,
        resolver: Resolver {
            secrets: &secrets,
            steps: &values,
        },
        redactor: &redactor,
        run_started: jiff::Timestamp::now(),
    };
    let step = runbook.step(id).unwrap_or_else(|| panic!("no step {id}"));
    probe(&step.action, step.target.as_deref(), step.timeout, &ctx).await
}

fn redis_runbook(url: &str, steps: &str) -> Runbook {
    runbook(&format!(
        "version: 1\nname: probe\nsecrets:\n  pw: {{ env: REDIS_MOVE_TEST_PW }}\ntargets:\n  r: {{ redis: {{ url: \"{url}\", timeout: 2s }} }}\nphases:\n  - id: p\n    steps:\n{steps}"
    ))
}

#[tokio::test]
async fn redis_ping_info_dbsize_scan_config() {
    let server = RedisServer::start();
    server.cli(&["SET", "job:1", "a"]);
    server.cli(&["SET", "job:2", "b"]);
    server.cli(&["RPUSH", "jobs:pending", "1"]);
    for i in 0..30 {
        server.cli(&["SET", &format!("other:{i}"), "x"]);
    }
    let rb = redis_runbook(
        &server.url(),
        "      - { id: ping, redis.ping: {} }\n\
         - { id: mem, redis.info: { field: memory.used_memory } }\n\
         - { id: policy, redis.info: { field: maxmemory_policy } }\n\
         - { id: ratio, redis.info: { field: stats.keyspace_hit_ratio } }\n\
         - { id: keys, redis.info: { field: keyspace.db0.keys } }\n\
         - { id: size, redis.dbsize: {} }\n\
         - { id: jobs, redis.scan_count: { match: \"job*\", count: 5 } }\n\
         - { id: lists, redis.scan_count: { match: \"job*\", type: list } }\n\
         - { id: get, redis.config_get: { parameter: maxmemory-policy } }\n\
         - { id: maxmem, redis.config_get: { parameter: maxmemory } }\n\
         - { id: llen, redis.command: { args: [LLEN, jobs:pending], read_only: true } }\n"
            .replace("\n- ", "\n      - ")
            .as_str(),
    );
    assert!(
        matches!(run_step(&rb, "ping").await.unwrap(), Value::Duration(d) if d < Duration::from_secs(1))
    );
    assert!(matches!(run_step(&rb, "mem").await.unwrap(), Value::Number(n) if n > 100_000.0));
    assert_eq!(
        run_step(&rb, "policy").await.unwrap(),
        Value::Text("noeviction".into())
    );
    assert_eq!(run_step(&rb, "keys").await.unwrap(), Value::Number(33.0));
    assert_eq!(run_step(&rb, "size").await.unwrap(), Value::Number(33.0));
    assert_eq!(run_step(&rb, "jobs").await.unwrap(), Value::Number(3.0));
    assert_eq!(run_step(&rb, "lists").await.unwrap(), Value::Number(1.0));
    assert_eq!(
        run_step(&rb, "get").await.unwrap(),
        Value::Text("noeviction".into())
    );
    assert_eq!(run_step(&rb, "maxmem").await.unwrap(), Value::Number(0.0));
    assert_eq!(run_step(&rb, "llen").await.unwrap(), Value::Number(1.0));
    server.cli(&["GET", "job:1"]);
    server.cli(&["GET", "missing"]);
    assert!(
        matches!(run_step(&rb, "ratio").await.unwrap(), Value::Number(r) if r > 0.0 && r < 1.0)
    );
}

#[tokio::test]
async fn redis_password_from_a_secret_and_wrong_password() {
    let server = RedisServer::start_with(Some("s3cret-pw"), &[]);
    // SAFETY: tests in this file that read this variable set it to the same value.
    unsafe { std::env::set_var("REDIS_MOVE_TEST_PW", "s3cret-pw") };
    let url = format!("redis://:${{secrets.pw}}@127.0.0.1:{}", server.port);
    let rb = redis_runbook(&url, "      - { id: ping, redis.ping: {} }\n");
    assert!(run_step(&rb, "ping").await.is_ok());
    let wrong = redis_runbook(
        &format!("redis://:nope@127.0.0.1:{}", server.port),
        "      - { id: ping, redis.ping: {} }\n",
    );
    let err = run_step(&wrong, "ping").await.unwrap_err();
    assert!(!err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn redis_bullmq_queue_depths() {
    let server = RedisServer::start();
    for (queue, waiting) in [("ocr", 3), ("extractor", 2)] {
        server.cli(&["SET", &format!("bull:{queue}:id"), "10"]);
        for i in 0..waiting {
            server.cli(&["RPUSH", &format!("bull:{queue}:wait"), &i.to_string()]);
        }
    }
    server.cli(&["ZADD", "bull:ocr:delayed", "1", "a", "2", "b"]);
    server.cli(&["ZADD", "bull:ocr:failed", "1", "f"]);
    server.cli(&["RPUSH", "bull:extractor:active", "x"]);
    let rb = redis_runbook(
        &server.url(),
        "      - { id: q, redis.queues: {} }\n      - { id: only, redis.queues: { queues: [ocr] } }\n",
    );
    let value = run_step(&rb, "q").await.unwrap();
    let total = value.field("total").unwrap();
    assert_eq!(total.field("waiting"), Some(&Value::Number(5.0)));
    assert_eq!(total.field("delayed"), Some(&Value::Number(2.0)));
    assert_eq!(total.field("failed"), Some(&Value::Number(1.0)));
    // depth = waiting + active + prioritized + delayed + waiting_children
    assert_eq!(total.field("depth"), Some(&Value::Number(8.0)));
    let ocr = value.field("queues").unwrap().field("ocr").unwrap();
    assert_eq!(ocr.field("depth"), Some(&Value::Number(5.0)));
    let only = run_step(&rb, "only").await.unwrap();
    assert!(only.field("queues").unwrap().field("extractor").is_none());
}

#[tokio::test]
async fn redis_response_timeout_is_the_targets_not_500ms() {
    let server = RedisServer::start_with(None, &["--enable-debug-command", "yes"]);
    // The target's `timeout:` reaches the connection (through the endpoint the actions
    // resolve from the runbook's target).
    let connect = |timeout: &str| {
        let rb = redis_runbook(&server.url(), "      - { id: ping, redis.ping: {} }\n");
        let redis_move::runbook::spec::TargetSpec::Redis(mut spec) = rb.targets["r"].spec.clone()
        else {
            panic!()
        };
        spec.timeout = Some(timeout.parse().unwrap());
        let secrets = Secrets::default();
        let values: HashMap<String, Value> = HashMap::new();
        let resolver = Resolver {
            secrets: &secrets,
            steps: &values,
        };
        Connections::new(&rb)
            .redis_endpoint(&spec, &resolver)
            .unwrap()
    };
    let sleep = ["DEBUG".to_owned(), "SLEEP".to_owned(), "0.8".to_owned()];
    // DEBUG SLEEP 0.8 outlives the redis crate's 500 ms default, not the target's 2 s.
    let patient = RedisBackend::connect(&connect("2s")).await.unwrap();
    patient
        .command(&sleep)
        .await
        .expect("a 0.8 s command within a 2 s timeout");
    let hasty = RedisBackend::connect(&connect("200ms")).await.unwrap();
    let err = hasty.command(&sleep).await.unwrap_err();
    assert!(matches!(err, BackendError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn redis_unreachable_is_an_error_not_a_hang() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let rb = redis_runbook(&url, "      - { id: ping, redis.ping: {}, timeout: 3s }\n");
    let start = std::time::Instant::now();
    let err = run_step(&rb, "ping").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            err,
            ActionError::Backend(BackendError::Unreachable(_) | BackendError::Timeout(_))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn tcp_and_assert() {
    let server = RedisServer::start();
    let rb = runbook(&format!(
        "version: 1\nname: t\nphases:\n  - id: p\n    steps:\n      - {{ id: open, tcp: {{ address: \"127.0.0.1:{}\" }} }}\n      - {{ id: closed, tcp: {{ address: \"127.0.0.1:{}\" }} }}\n      - {{ id: a, assert: {{ value: \"${{env.REDIS_MOVE_TEST_ASSERT}}\" }}, expect: {{ starts_with: \"https://\" }} }}\n",
        server.port,
        redis_move_testbed::free_port()
    ));
    assert!(matches!(
        run_step(&rb, "open").await.unwrap(),
        Value::Duration(_)
    ));
    assert!(matches!(
        run_step(&rb, "closed").await.unwrap_err(),
        ActionError::Backend(BackendError::Unreachable(_))
    ));
    // SAFETY: no other test reads this variable.
    unsafe { std::env::set_var("REDIS_MOVE_TEST_ASSERT", "https://x.upstash.io") };
    assert_eq!(
        run_step(&rb, "a").await.unwrap(),
        Value::Text("https://x.upstash.io".into())
    );
}

#[tokio::test]
async fn http_status_json_and_latency() {
    // A one-request HTTP server on a free port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for status in ["200 OK", "503 Service Unavailable"] {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let body = r#"{"status":"connected"}"#;
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    let rb = runbook(&format!(
        "version: 1\nname: h\nphases:\n  - id: p\n    steps:\n      - {{ id: health, http: {{ url: \"http://127.0.0.1:{port}/health\" }} }}\n"
    ));
    let value = run_step(&rb, "health").await.unwrap();
    assert_eq!(value.field("status"), Some(&Value::Number(200.0)));
    assert_eq!(
        value.field("json").unwrap().field("status"),
        Some(&Value::Text("connected".into()))
    );
    assert!(matches!(value.field("latency"), Some(Value::Duration(_))));
    let err = run_step(&rb, "health").await.unwrap_err();
    assert!(err.to_string().contains("HTTP 503"), "{err}");
}

#[tokio::test]
async fn docker_containers_logs_images_volumes_wait_healthy() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let image = docker::redis_image(&engine).await;
    let healthy = unique_name("healthy");
    let plain = unique_name("plain");
    let _guard = ContainerGuard::new([healthy.clone(), plain.clone()]);
    for (name, with_health) in [(&healthy, true), (&plain, false)] {
        let args = [
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "rmtest=probes",
            "-v",
            &format!("{name}-vol:/data"),
        ];
        let mut cmd = std::process::Command::new("docker");
        cmd.args(args);
        if with_health {
            cmd.args([
                "--health-cmd",
                "/usr/bin/redis-cli ping",
                "--health-interval",
                "1s",
            ]);
        }
        cmd.args(["-e", "REDIS_URL=redis://:pw-in-env@10.0.0.1:6379"]);
        let out = cmd
            .args([
                &image.reference,
                "/usr/bin/redis-server",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prefix = format!("^rmtest-{}-", std::process::id());
    let rb = runbook(&format!(
        "version: 1\nname: d\ntargets:\n  local: {{ docker: {{}} }}\nphases:\n  - id: p\n    steps:\n\
         \x20     - {{ id: all, docker.containers: {{ name: \"{prefix}\", labels: {{ rmtest: probes }} }} }}\n\
         \x20     - {{ id: running, docker.containers: {{ name: \"{healthy}\", state: running }} }}\n\
         \x20     - {{ id: ready, docker.logs: {{ name: \"{prefix}\", match: \"Ready to accept connections\", since: 1h }} }}\n\
         \x20     - {{ id: tail, docker.logs: {{ name: \"{plain}\", tail: 1 }} }}\n\
         \x20     - {{ id: images, docker.images: {{ name: \"^rmtest/redis:\" }} }}\n\
         \x20     - {{ id: volumes, docker.volumes: {{ name: \"{prefix}\" }} }}\n\
         \x20     - {{ id: healthy, docker.wait_healthy: {{ name: \"{prefix}\", timeout: 30s }} }}\n"
    ));
    let healthy_value = run_step(&rb, "healthy").await.unwrap();
    let Value::List(items) = &healthy_value else {
        panic!()
    };
    assert_eq!(items.len(), 2);
    let all = run_step(&rb, "all").await.unwrap();
    let Value::List(items) = &all else { panic!() };
    assert_eq!(items.len(), 2);
    let first = &items[0];
    assert_eq!(first.field("state"), Some(&Value::Text("running".into())));
    assert!(first.field("mounts").unwrap().as_text().contains(":/data"));
    let env = first.field("env").unwrap().as_text();
    assert!(
        env.contains("REDIS_URL=redis://:****@10.0.0.1:6379"),
        "{env}"
    );
    assert!(!env.contains("pw-in-env"));
    let health: Vec<String> = items
        .iter()
        .map(|c| c.field("health").unwrap().as_text())
        .collect();
    assert!(
        health.contains(&"healthy".to_string()) && health.contains(&"none".to_string()),
        "{health:?}"
    );
    let Value::List(running) = run_step(&rb, "running").await.unwrap() else {
        panic!()
    };
    assert_eq!(running.len(), 1);
    let Value::List(ready) = run_step(&rb, "ready").await.unwrap() else {
        panic!()
    };
    assert_eq!(ready.len(), 2, "{ready:?}");
    let Value::List(tail) = run_step(&rb, "tail").await.unwrap() else {
        panic!()
    };
    assert_eq!(tail.len(), 1);
    let Value::List(images) = run_step(&rb, "images").await.unwrap() else {
        panic!()
    };
    assert!(images.iter().any(|i| {
        i.field("tags")
            .unwrap()
            .as_text()
            .contains(&image.reference)
    }));
    let Value::List(volumes) = run_step(&rb, "volumes").await.unwrap() else {
        panic!()
    };
    assert_eq!(volumes.len(), 2);
    drop(_guard);
    for name in [&healthy, &plain] {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &format!("{name}-vol")])
            .output();
    }
}

#[tokio::test]
async fn docker_unreachable_engine_is_a_clear_error() {
    let rb = runbook(
        "version: 1\nname: d\ntargets:\n  gone: { docker: { host: \"unix:///tmp/rmtest-no-such.sock\" } }\nphases:\n  - id: p\n    steps:\n      - { id: list, docker.containers: {} }\n",
    );
    let err = run_step(&rb, "list").await.unwrap_err();
    assert!(err.to_string().contains("rmtest-no-such.sock"), "{err}");
}

#[tokio::test]
async fn redis_clients_leaves_out_replicas_and_redis_moves_own_connections() {
    let server = RedisServer::start();
    let replica = RedisServer::start_with(
        None,
        &["--replicaof", "127.0.0.1", &server.port.to_string()],
    );
    // Three named workers and one unnamed client, held open.
    let client = redis::Client::open(server.url()).unwrap();
    let mut held = Vec::new();
    for name in ["worker-1", "worker-2", "worker-3", ""] {
        let mut con = client.get_connection().unwrap();
        if !name.is_empty() {
            let _: () = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query(&mut con)
                .unwrap();
        }
        held.push(con);
    }
    let start = std::time::Instant::now();
    while !server
        .cli(&["INFO", "replication"])
        .contains("connected_slaves:1")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the replica never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rb = redis_runbook(
        &server.url(),
        "      - { id: all, redis.clients: {} }\n      - { id: workers, redis.clients: { name: \"^worker-\" }, expect: { count: \">= 3\" } }\n      - { id: with-replicas, redis.clients: { replicas: true } }\n      - { id: everything, redis.clients: { replicas: true, include_self: true } }\n",
    );
    let count = |v: Value| match v {
        Value::List(items) => items.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(count(run_step(&rb, "all").await.unwrap()), 4);
    let workers = run_step(&rb, "workers").await.unwrap();
    assert_eq!(count(workers.clone()), 3);
    let Value::List(items) = &workers else {
        unreachable!()
    };
    assert!(items.iter().all(|c| {
        c.field("name")
            .map(Value::as_text)
            .unwrap_or_default()
            .starts_with("worker-")
    }));
    assert_eq!(count(run_step(&rb, "with-replicas").await.unwrap()), 5);
    assert!(count(run_step(&rb, "everything").await.unwrap()) >= 6);
    // The check can fail: one worker gone, `>= 3` no longer holds.
    drop(held.remove(0));
    let start = std::time::Instant::now();
    while count(run_step(&rb, "workers").await.unwrap()) != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the closed connection stayed listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let step = rb.step("workers").unwrap();
    let value = run_step(&rb, "workers").await.unwrap();
    let resolver_secrets = redis_move::actions::resolve::Secrets::default();
    let values: HashMap<String, Value> = HashMap::new();
    let resolver = Resolver {
        secrets: &resolver_secrets,
        steps: &values,
    };
    assert!(
        !step
            .expect
            .as_ref()
            .unwrap()
            .check(&value, &resolver)
            .passed
    );
    drop(replica);
}

/// `redis.queues` against BullMQ's own view of a state with every job kind, built by the
/// BullMQ library itself (the Python `bullmq` package): flows, priorities, delays, a
/// paused queue, a job scheduler, an active job, failures, and a custom prefix.
#[tokio::test]
async fn redis_queues_agree_with_bullmq() {
    if !redis_move_testbed::python::has_module("bullmq") {
        return;
    }
    let server = RedisServer::start();
    let script = redis_move_testbed::python::fixture("bullmq_state.py");
    let out = redis_move_testbed::python::run(&script, &[&server.url()]);
    let bullmq: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let rb = redis_runbook(
        &server.url(),
        "      - { id: bull, redis.queues: {} }\n      - { id: myapp, redis.queues: { prefix: myapp } }\n",
    );
    let mut compared = 0;
    for (prefix, queues) in bullmq.as_object().unwrap() {
        let ours = run_step(&rb, prefix).await.unwrap();
        let ours_queues = ours.field("queues").unwrap();
        let theirs = queues.as_object().unwrap();
        let names = |v: &Value| match v {
            Value::Object(fields) => fields.keys().cloned().collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let mut expected: Vec<String> = theirs.keys().cloned().collect();
        expected.sort();
        assert_eq!(names(ours_queues), expected, "queues found under {prefix}");
        let mut depth_total = 0.0;
        for (name, report) in theirs {
            let queue = ours_queues.field(name).unwrap();
            let number = |field: &str| match queue.field(field) {
                Some(Value::Number(n)) => *n,
                other => panic!("{prefix}:{name} {field}: {other:?}"),
            };
            let counts = report["counts"].as_object().unwrap();
            for (state, count) in counts {
                let field = state.replace('-', "_");
                assert_eq!(
                    number(&field),
                    count.as_f64().unwrap(),
                    "{prefix}:{name} {state}: redis-move {queue}, BullMQ {report}"
                );
                compared += 1;
            }
            assert_eq!(
                queue.field("paused"),
                Some(&Value::Bool(report["paused"].as_bool().unwrap())),
                "{prefix}:{name} paused"
            );
            assert_eq!(
                number("schedulers"),
                report["schedulers"].as_f64().unwrap(),
                "{prefix}:{name} schedulers"
            );
            let unfinished = [
                "waiting",
                "active",
                "prioritized",
                "delayed",
                "waiting-children",
            ];
            let depth: f64 = unfinished
                .iter()
                .map(|s| counts[*s].as_f64().unwrap())
                .sum();
            assert_eq!(number("depth"), depth, "{prefix}:{name} depth");
            depth_total += depth;
        }
        let total = ours.field("total").unwrap();
        assert_eq!(total.field("depth"), Some(&Value::Number(depth_total)));
    }
    // Every state of every queue, and the states the fixture means to build are there.
    assert_eq!(compared, 5 * 7);
    let bull = &bullmq["bull"];
    assert_eq!(bull["reports"]["counts"]["waiting-children"], 1);
    assert_eq!(bull["billing"]["paused"], true);
    assert_eq!(bull["mail"]["counts"]["active"], 1);
    assert_eq!(bull["mail"]["schedulers"], 1);
    let total = run_step(&rb, "bull").await.unwrap();
    assert_eq!(
        total.field("total").unwrap().field("paused"),
        Some(&Value::Number(1.0))
    );
}

/// Queues written by BullMQ before version 5 are read too: a paused queue's jobs in the
/// `paused` list, and the `0:` marker at the end of `wait` not counted as a job.
#[tokio::test]
async fn redis_queues_read_older_bullmq_layouts() {
    let server = RedisServer::start();
    server.cli(&["SET", "bull:old:id", "9"]);
    server.cli(&["RPUSH", "bull:old:wait", "7", "0:1700000000000"]);
    server.cli(&["SET", "bull:held:id", "3"]);
    server.cli(&["RPUSH", "bull:held:paused", "1", "2", "3"]);
    // Not a queue, though its name has a queue's shape: flagged, not fatal.
    server.cli(&["SET", "bull:cfg:wait", "x"]);
    let rb = redis_runbook(&server.url(), "      - { id: q, redis.queues: {} }\n");
    let value = run_step(&rb, "q").await.unwrap();
    let queues = value.field("queues").unwrap();
    let old = queues.field("old").unwrap();
    assert_eq!(old.field("waiting"), Some(&Value::Number(1.0)));
    assert_eq!(old.field("paused"), Some(&Value::Bool(false)));
    let held = queues.field("held").unwrap();
    assert_eq!(held.field("waiting"), Some(&Value::Number(3.0)));
    assert_eq!(held.field("paused"), Some(&Value::Bool(true)));
    assert_eq!(held.field("depth"), Some(&Value::Number(3.0)));
    let cfg = queues.field("cfg").unwrap();
    assert!(
        cfg.field("error")
            .unwrap()
            .as_text()
            .contains("not a BullMQ queue")
    );
    assert_eq!(
        value.field("total").unwrap().field("waiting"),
        Some(&Value::Number(4.0))
    );
}

/// Writes refused for memory show in `errorstats.OOM` and `stats.rejected_calls`: the
/// signal on a `noeviction` server, where `evicted_keys` stays 0 whatever happens.
#[tokio::test]
async fn redis_info_counts_rejected_writes() {
    let server = RedisServer::start();
    let rb = redis_runbook(
        &server.url(),
        "      - { id: oom, redis.info: { field: errorstats.OOM } }\n      - { id: rejected, redis.info: { field: stats.rejected_calls } }\n      - { id: evicted, redis.info: { field: stats.evicted_keys } }\n",
    );
    assert_eq!(run_step(&rb, "oom").await.unwrap(), Value::Number(0.0));
    let before = run_step(&rb, "rejected").await.unwrap();
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let refused = server.cli(&["SET", "k", "v"]);
    assert!(refused.contains("OOM"), "{refused}");
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(run_step(&rb, "oom").await.unwrap(), Value::Number(1.0));
    let after = run_step(&rb, "rejected").await.unwrap();
    match (before, after) {
        (Value::Number(b), Value::Number(a)) => assert_eq!(a - b, 1.0),
        other => panic!("{other:?}"),
    }
    assert_eq!(run_step(&rb, "evicted").await.unwrap(), Value::Number(0.0));
}
