//! Stand-ins for the managed Redis services of seeds 002 (Render) and 003 (Upstash), on
//! fixed loopback ports so that `runbooks/vars/render-redis.sandbox.yaml` and
//! `runbooks/vars/upstash-redis.sandbox.yaml` can name them: a redis-server with a
//! password and the backend's API (Render); a TLS-only redis-server (test CA in
//! [`CA_DIR`]) and an HTTPS server answering the REST ping, the health endpoint and the
//! admin metrics (Upstash). `redis-move-sandbox managed` keeps them up; the end-to-end
//! tests start them too.

use std::path::PathBuf;

use crate::RedisServer;
use crate::http::{HttpStub, Route};
use crate::tls::make_certs;

/// The stand-ins' Redis password (`RENDER_REDIS_URL`, `UPSTASH_REDIS_PASSWORD`).
pub const PASSWORD: &str = "sandbox-managed";
/// The Render stand-in's Redis port.
pub const RENDER_REDIS_PORT: u16 = 16390;
/// The backend API of the Render runbook (`api_url`).
pub const RENDER_API_PORT: u16 = 16392;
/// The Upstash stand-in's TLS Redis port.
pub const UPSTASH_REDIS_PORT: u16 = 16391;
/// The REST API and the app of the Upstash runbook, over HTTPS.
pub const UPSTASH_HTTPS_PORT: u16 = 16393;
/// Where the test CA is written (`redis_ca`, `http_ca`).
pub const CA_DIR: &str = "/tmp/redis-move-sandbox-managed";

/// The Render stand-in: its Redis, the backend API, and the backend's connection.
pub struct Render {
    /// Redis, with [`PASSWORD`].
    pub redis: RedisServer,
    /// `POST /api/messages/send`.
    pub api: HttpStub,
    /// The backend's connection to Redis (named as BullMQ names it), with its four
    /// queues created: what the runbook's client and queue checks look for.
    pub backend: redis::Connection,
}

/// The queues the koinonia-sms backend creates.
pub const RENDER_QUEUES: [&str; 4] = ["sms", "mms", "mail", "analytics"];

/// Starts the Render stand-in.
pub fn render() -> Render {
    let redis = RedisServer::start_at(RENDER_REDIS_PORT, Some(PASSWORD), &[]);
    let mut backend = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("the Render stand-in answers");
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("bull:koinonia-sms")
        .query(&mut backend)
        .expect("CLIENT SETNAME");
    for queue in RENDER_QUEUES {
        let _: () = redis::cmd("HSET")
            .arg(format!("bull:{queue}:meta"))
            .arg("opts.maxLenEvents")
            .arg(10000)
            .query(&mut backend)
            .expect("HSET");
    }
    Render {
        redis,
        api: HttpStub::start_at(
            RENDER_API_PORT,
            vec![Route::new("/api/messages/send", 202, r#"{"queued":true}"#)],
            None,
        ),
        backend,
    }
}

/// The Upstash stand-in: TLS Redis and the HTTPS endpoints.
pub struct Upstash {
    /// Redis over TLS only, with [`PASSWORD`].
    pub redis: RedisServer,
    /// `/ping`, `/api/v1/health/redis`, `/api/v1/admin/redis-metrics`.
    pub https: HttpStub,
    /// The CA that signed both certificates.
    pub ca: PathBuf,
}

/// Starts the Upstash stand-in, with some cache traffic (a hit rate above 60%).
pub fn upstash() -> Upstash {
    let dir = PathBuf::from(CA_DIR);
    std::fs::create_dir_all(&dir).expect("the CA directory");
    let certs = make_certs(&dir);
    let redis = RedisServer::start_tls_at(UPSTASH_REDIS_PORT, &certs, Some(PASSWORD));
    let https = HttpStub::start_at(
        UPSTASH_HTTPS_PORT,
        vec![
            Route::new("/ping", 200, r#"{"result":"PONG"}"#),
            Route::new("/api/v1/health/redis", 200, r#"{"redis":"connected"}"#),
            Route::new(
                "/api/v1/admin/redis-metrics",
                200,
                r#"{"hits":9,"misses":1}"#,
            ),
        ],
        Some(&certs),
    );
    let client = redis::Client::open(format!(
        "rediss://default:{PASSWORD}@127.0.0.1:{UPSTASH_REDIS_PORT}/#insecure"
    ))
    .expect("a client");
    let mut con = client.get_connection().expect("the TLS stand-in answers");
    let _: () = redis::cmd("SET")
        .arg("ws:1:cache")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    for _ in 0..9 {
        let _: String = redis::cmd("GET")
            .arg("ws:1:cache")
            .query(&mut con)
            .expect("GET");
    }
    let _: Option<String> = redis::cmd("GET")
        .arg("ws:1:miss")
        .query(&mut con)
        .expect("GET");
    Upstash {
        redis,
        https,
        ca: certs.ca,
    }
}
