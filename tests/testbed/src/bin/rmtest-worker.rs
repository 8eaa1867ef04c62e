//! A tiny queue worker for tests and the sandbox: reads `REDIS_URL` at start, logs
//! "Worker started", takes jobs from `<QUEUE>:wait` (BLPOP), marks them done in
//! `<QUEUE>:done`, and logs what ioredis logs when Redis cannot be used: `Error: connect
//! ECONNREFUSED` while it cannot be reached, `ReplyError: NOAUTH ...`/`WRONGPASS ...` when
//! it refuses the password, `ReplyError: READONLY ...` on a replica — the behaviour of
//! the BullMQ workers in the migration runbooks, without Node.
//!
//! `BAD_PASSWORD_WHEN_URL=part` makes it send a wrong password once its `REDIS_URL`
//! contains `part` (it logs `WRONGPASS` and keeps retrying, as ioredis does).
//!
//! `FAIL_MODULE=1` makes it log a module resolution error and exit, like a worker whose
//! image lost its `dist/` folder; `FAIL_MODULE_WHEN_URL=part` does so only when its
//! `REDIS_URL` contains `part` (it breaks once moved).
//!
//! With a `QUEUE` of the form `bull:<name>` it moves jobs the way BullMQ does:
//! `LMOVE <queue>:wait <queue>:active`, then `ZADD <queue>:completed` and `LREM` from
//! active, so that every job is in exactly one of wait, active and completed at any time;
//! its connection is named `<queue>:w` (`CLIENT SETNAME`), as BullMQ names its own;
//! it also records when it last finished a job in the hash `<queue>:workers` (so a test
//! can tell that every worker consumes from a server).

//!
//! With `ROLE=keys-app` it is seed 004's service: it submits a job `RATE` times a second
//! (`HSET <p>:<id>` and `ZADD <p>s:pending`) and marks the previous one running, under
//! the primary pattern `PRIMARY_KEY_PATTERN` (`job`, default, or `step`) and, with
//! `ENABLE_DUAL_WRITE_STEPS=true`, under the other one too, in one MULTI; it logs
//! `wrote <id> <patterns>` for each job a server acknowledged and adds its id to the set
//! `app:written` in the same MULTI.
//!
//! With `ROLE=producer` it is the application instead: it enqueues BullMQ-shaped jobs
//! (`HSET bull:<q>:<id>` and `RPUSH bull:<q>:wait <id>`, in one MULTI) round-robin over
//! the queues of `QUEUES` (comma-separated names), `RATE` a second, to the first server
//! of `REDIS_URLS` (comma-separated) that takes writes, and logs `acked <q> <id>` for
//! each job a server acknowledged and `rejected <id> (...)` for each it refused
//! (`READONLY`, `NOREPLICAS`) or could not take; a refusal sends it to the next server,
//! as an application following the primary.

use std::time::{Duration, Instant};

fn main() {
    if std::env::var("ROLE").is_ok_and(|r| r == "producer") {
        produce();
    }
    if std::env::var("ROLE").is_ok_and(|r| r == "keys-app") {
        keys_app();
    }
    let name = std::env::var("WORKER_NAME").unwrap_or_else(|_| "worker".into());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A deploy that only breaks once restarted against the new Redis (its first fresh
    // start in weeks), as in seed 000's rollback triggers.
    let fails_on_new_url = std::env::var("FAIL_MODULE_WHEN_URL")
        .is_ok_and(|part| !part.is_empty() && url.contains(&part));
    if fails_on_new_url || std::env::var("FAIL_MODULE").is_ok_and(|v| v == "1") {
        eprintln!(
            "[{name}] Error: Cannot find module '@/lib/queue' imported from /app/dist/worker.js"
        );
        eprintln!("[{name}] code: 'ERR_MODULE_NOT_FOUND'");
        std::process::exit(1);
    }
    // A deploy whose secret is stale on the new host: the password it sends is wrong
    // once its REDIS_URL contains `part`.
    let url = match std::env::var("BAD_PASSWORD_WHEN_URL") {
        Ok(part) if !part.is_empty() && url.contains(&part) => match url.split_once('@') {
            Some((_, host)) => format!("redis://:not-the-password@{host}"),
            None => url,
        },
        _ => url,
    };
    let queue = std::env::var("QUEUE").unwrap_or_else(|_| "jobs".into());
    let job_ms: u64 = std::env::var("JOB_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let client = match redis::Client::open(url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("[{name}] invalid REDIS_URL: {e}");
            std::process::exit(2);
        }
    };
    let wait = format!("{queue}:wait");
    let done = format!("{queue}:done");
    if queue.starts_with("bull:") || queue.starts_with("{bull}:") {
        bullmq(client, &name, &queue, job_ms);
    }
    loop {
        let mut connection = match client.get_connection_with_timeout(Duration::from_secs(1)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("[{name}] {}", ioredis_error(&e));
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
        };
        let _ = connection.set_read_timeout(Some(Duration::from_secs(3)));
        // Named as BullMQ names its connections (`<prefix>:<queue>...`), so that
        // `redis.clients` can count the workers.
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{queue}:w"))
            .query::<()>(&mut connection);
        println!("[{name}] Worker started, queue {queue}");
        loop {
            let popped: redis::RedisResult<Option<(String, String)>> =
                redis::cmd("BLPOP").arg(&wait).arg(1).query(&mut connection);
            match popped {
                Ok(Some((_, job))) => {
                    std::thread::sleep(Duration::from_millis(job_ms));
                    match redis::cmd("SADD")
                        .arg(&done)
                        .arg(&job)
                        .query::<i64>(&mut connection)
                    {
                        Ok(_) => println!("[{name}] processed job {job}"),
                        Err(e) => {
                            // The job was taken but not recorded: put it back.
                            eprintln!("[{name}] {}; job {job} requeued", ioredis_error(&e));
                            let _ = redis::cmd("RPUSH")
                                .arg(&wait)
                                .arg(&job)
                                .query::<i64>(&mut connection);
                            break;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("[{name}] {}", ioredis_error(&e));
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Consumes a BullMQ-shaped queue: wait -> active -> completed. On a Redis Cluster (a
/// `{bull}:` queue, whose keys share a slot) it follows `MOVED` to the node that serves
/// the queue, as a cluster client does.
fn bullmq(mut client: redis::Client, name: &str, queue: &str, job_ms: u64) -> ! {
    let (wait, active, completed, workers) = (
        format!("{queue}:wait"),
        format!("{queue}:active"),
        format!("{queue}:completed"),
        format!("{queue}:workers"),
    );
    loop {
        let mut connection = match client.get_connection_with_timeout(Duration::from_secs(1)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("[{name}] {}", ioredis_error(&e));
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
        };
        let _ = connection.set_read_timeout(Some(Duration::from_secs(3)));
        // Named as BullMQ names its connections (`<prefix>:<queue>...`), so that
        // `redis.clients` can count the workers.
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{queue}:w"))
            .query::<()>(&mut connection);
        println!("[{name}] Worker started, queue {queue}");
        loop {
            let moved: redis::RedisResult<Option<String>> = redis::cmd("BLMOVE")
                .arg(&wait)
                .arg(&active)
                .arg("LEFT")
                .arg("RIGHT")
                .arg(1)
                .query(&mut connection);
            match moved {
                Ok(Some(job)) => {
                    std::thread::sleep(Duration::from_millis(job_ms));
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    let finished: redis::RedisResult<()> = redis::pipe()
                        .atomic()
                        .cmd("ZADD")
                        .arg(&completed)
                        .arg(now)
                        .arg(&job)
                        .ignore()
                        .cmd("LREM")
                        .arg(&active)
                        .arg(1)
                        .arg(&job)
                        .ignore()
                        .cmd("HSET")
                        .arg(&workers)
                        .arg(name)
                        .arg(now)
                        .ignore()
                        .query(&mut connection);
                    match finished {
                        Ok(()) => println!("[{name}] processed job {job}"),
                        Err(e) => {
                            // Still in active: BullMQ's stalled-job check would move it
                            // back to wait; the job is not lost.
                            eprintln!("[{name}] {}; job {job} left in active", ioredis_error(&e));
                            break;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) if e.code() == Some("MOVED") => {
                    if let Some((node, _)) = e.redirect_node()
                        && let Ok(moved) = redis::Client::open(format!("redis://{node}"))
                    {
                        println!("[{name}] the queue's slot is served by {node}");
                        client = moved;
                    }
                    break;
                }
                // A refusal (READONLY on a replica, OOM) keeps the connection, as
                // ioredis does: the worker stays connected and retries.
                Err(e) if e.code().is_some() => {
                    eprintln!("[{name}] {}", ioredis_error(&e));
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    eprintln!("[{name}] {}", ioredis_error(&e));
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How ioredis reports an error: a server's refusal as `ReplyError: CODE message`, the
/// rest as a failed connection.
fn ioredis_error(e: &redis::RedisError) -> String {
    let text = e.to_string();
    let refused = ["WRONGPASS", "NOAUTH", "READONLY", "OOM", "NOREPLICAS"]
        .iter()
        .any(|code| text.contains(code));
    match e.code() {
        _ if refused => format!("ReplyError: {text}"),
        Some(code) => format!("ReplyError: {code} {}", e.detail().unwrap_or_default()),
        None => format!("Error: connect ECONNREFUSED ({e})"),
    }
}

fn keys_app() -> ! {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let primary = std::env::var("PRIMARY_KEY_PATTERN").unwrap_or_else(|_| "job".into());
    let dual = std::env::var("ENABLE_DUAL_WRITE_STEPS").is_ok_and(|v| v == "true");
    let rate: f64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50.0);
    let mut patterns = vec![primary.clone()];
    if dual {
        patterns.push(if primary == "step" { "job" } else { "step" }.to_owned());
    }
    let pace = Duration::from_secs_f64(1.0 / rate.max(0.1));
    // Unique across restarts (a recreate starts the process again).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    println!("keys-app started: writes {}", patterns.join("+"));
    let mut connection: Option<redis::Connection> = None;
    let mut previous: Option<String> = None;
    let mut seq = 0u64;
    loop {
        let started = Instant::now();
        if connection.is_none() {
            connection = redis::Client::open(url.as_str())
                .ok()
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)).ok());
        }
        if let Some(con) = connection.as_mut() {
            seq += 1;
            let id = format!("app-{run}-{seq}");
            let mut pipe = redis::pipe();
            pipe.atomic();
            for p in &patterns {
                pipe.cmd("HSET")
                    .arg(format!("{p}:{id}"))
                    .arg("type")
                    .arg("ocr")
                    .arg("state")
                    .arg("queued")
                    .ignore();
                pipe.cmd("ZADD")
                    .arg(format!("{p}s:pending"))
                    .arg(seq)
                    .arg(&id)
                    .ignore();
                if let Some(previous) = &previous {
                    pipe.cmd("HSET")
                        .arg(format!("{p}:{previous}"))
                        .arg("state")
                        .arg("running")
                        .ignore();
                }
            }
            // What the test checks against: every job a server acknowledged.
            pipe.cmd("SADD").arg("app:written").arg(&id).ignore();
            match pipe.query::<()>(con) {
                Ok(()) => {
                    println!("wrote {id} {}", patterns.join("+"));
                    previous = Some(id);
                }
                Err(e) => {
                    eprintln!("{}", ioredis_error(&e));
                    connection = None;
                }
            }
        }
        std::thread::sleep(pace.saturating_sub(started.elapsed()));
    }
}

fn produce() -> ! {
    let urls: Vec<String> = std::env::var("REDIS_URLS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let queues: Vec<String> = std::env::var("QUEUES")
        .unwrap_or_else(|_| "jobs".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let rate: f64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    let pace = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut connections: Vec<Option<redis::Connection>> = urls.iter().map(|_| None).collect();
    let mut current = 0;
    let mut seq = 0u64;
    println!("producer started: {} queues, {rate} jobs/s", queues.len());
    loop {
        let started = Instant::now();
        seq += 1;
        let id = format!("app-{seq}");
        let queue = &queues[(seq as usize) % queues.len()];
        if connections[current].is_none() {
            connections[current] = redis::Client::open(urls[current].as_str())
                .ok()
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)).ok())
                .inspect(|c| {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                });
        }
        let outcome = match connections[current].as_mut() {
            None => Err("unreachable".to_owned()),
            Some(connection) => redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(format!("bull:{queue}:{id}"))
                .arg("name")
                .arg("app-job")
                .arg("data")
                .arg("{}")
                .arg("timestamp")
                .arg(seq)
                .ignore()
                .cmd("RPUSH")
                .arg(format!("bull:{queue}:wait"))
                .arg(&id)
                .ignore()
                .query::<()>(connection)
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(()) => println!("acked {queue} {id}"),
            Err(e) => {
                println!("rejected {id} ({e})");
                let upper = e.to_uppercase();
                if !(upper.contains("READONLY") || upper.contains("NOREPLICAS")) {
                    connections[current] = None;
                }
                current = (current + 1) % urls.len();
            }
        }
        std::thread::sleep(pace.saturating_sub(started.elapsed()));
    }
}
