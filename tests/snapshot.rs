//! `redis.snapshot` against real servers: an RDB streamed over the replication protocol
//! and one from a BGSAVE (read from the server's disk, and from a container through the
//! Docker Engine API) are stored with their digest, verified by loading them into a
//! throwaway redis-server, and restore the source's dataset; a corrupted or stale file
//! fails verification.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis_move::actions::snapshot::verify_file;
use redis_move::backend::redis::{RedisBackend, RedisEndpoint};
use redis_move::runbook::units::Percent;
use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::topology::Topology;
use redis_move_testbed::{RedisServer, Workspace, docker};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "Snap-Pw-77";
const NONE: Percent = Percent(0.0);

fn runbook(source: &RedisServer, snapshot: &str) -> String {
    format!(
        "version: 1\nname: snap\nsecrets:\n  pw: {{ env: SNAP_PW }}\ntargets:\n  src: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\" }} }}\nphases:\n  - id: main\n    steps:\n      - id: snap\n        redis.snapshot: {{ target: src, to: snapshots, {snapshot} }}\n",
        source.port
    )
}

/// The snapshot file a run wrote, from its journal.
fn written(ws: &Workspace) -> PathBuf {
    let journal = ws.journal().unwrap();
    let file = journal["steps"]["snap"]["value"]["object"]["file"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no file in {journal}"))
        .to_owned();
    ws.path().join(file)
}

fn text(ws: &Workspace, field: &str) -> String {
    ws.journal().unwrap()["steps"]["snap"]["value"]["object"][field]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The documented restore: a server started on the file as its dbfilename.
fn restored(file: &Path) -> RedisServer {
    RedisServer::start_with(
        None,
        &[
            "--dir",
            file.parent().unwrap().to_str().unwrap(),
            "--dbfilename",
            file.file_name().unwrap().to_str().unwrap(),
        ],
    )
}

fn source_with_data() -> RedisServer {
    let source = RedisServer::start_with(Some(PASSWORD), &[]);
    let mut con = connect(&source.url());
    dataset::load_every_type(&mut con, "t:");
    dataset::load_bullmq(&mut con, 2, 200);
    source
}

#[test]
fn a_streamed_snapshot_is_verified_and_restores_the_dataset() {
    let source = source_with_data();
    let before = snapshot(&mut connect(&source.url()), "*");
    let ws = Workspace::new(&runbook(&source, "sample: 200")).with_env("SNAP_PW", PASSWORD);
    let out = ws.run().success().get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let file = written(&ws);
    assert!(
        file.starts_with(ws.path().join("snapshots")),
        "{}",
        file.display()
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"REDIS0010"));
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(text(&ws, "sha256"), digest);
    assert_eq!(text(&ws, "method"), "replication");
    assert_eq!(ws.value_number("snap", "bytes"), bytes.len() as f64);
    assert_eq!(ws.value_number("snap", "rdb_version"), 10.0);
    assert_eq!(ws.value_number("snap", "keys"), before.len() as f64);
    assert_eq!(ws.value_number("snap", "changed"), 0.0);
    assert_eq!(ws.value_number("snap", "sampled"), 200.0);
    // Restoring it gives the source's dataset back.
    let back = restored(&file);
    assert_same(
        &before,
        &snapshot(&mut connect(&back.url()), "*"),
        <[u8]>::to_vec,
        5000,
    );
}

#[test]
fn a_bgsave_snapshot_from_the_servers_disk_is_verified() {
    let source = source_with_data();
    let ws = Workspace::new(&runbook(&source, "method: bgsave")).with_env("SNAP_PW", PASSWORD);
    ws.run().success();
    assert_eq!(text(&ws, "method"), "bgsave");
    assert_eq!(ws.value_number("snap", "changed"), 0.0);
    assert!(written(&ws).is_file());
}

#[tokio::test]
async fn a_corrupted_or_stale_snapshot_fails_verification() {
    let source = source_with_data();
    let ws = Workspace::new(&runbook(&source, "verify: false")).with_env("SNAP_PW", PASSWORD);
    ws.run().success();
    let file = written(&ws);
    let mut endpoint = RedisEndpoint::new(source.url());
    endpoint.timeout = Duration::from_secs(10);
    let live = RedisBackend::connect(&endpoint).await.unwrap();
    let fine = verify_file(&file, &live, 100, NONE, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fine.changed, 0, "{:?}", fine.beyond);
    // Writes after the snapshot: the verification sees the difference.
    source.cli(&["SET", "t:string", "changed since"]);
    source.cli(&["SET", "new-key", "1"]);
    let stale = verify_file(&file, &live, 100_000, NONE, Duration::ZERO)
        .await
        .unwrap();
    assert!(stale.changed >= 2, "{stale:?}");
    // One flipped byte in the middle: the checksum fails as it loads.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let corrupted = file.with_file_name("corrupted.rdb");
    std::fs::write(&corrupted, &bytes).unwrap();
    let err = verify_file(&corrupted, &live, 100, NONE, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not load"), "{err}");
    // Cut short: the same.
    let truncated = file.with_file_name("truncated.rdb");
    std::fs::write(&truncated, &bytes[..middle]).unwrap();
    let err = verify_file(&truncated, &live, 100, NONE, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not load"), "{err}");
}

#[tokio::test]
async fn a_bgsave_snapshot_of_a_server_in_a_container_is_read_through_the_engine() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = Topology::start(&engine, 0).await;
    let mut con = connect(&topo.source.host_url());
    dataset::load_every_type(&mut con, "c:");
    let before = snapshot(&mut con, "*");
    let ws = Workspace::new(&format!(
        "version: 1\nname: snap\ntargets:\n  src: {{ redis: {{ url: \"{}\" }} }}\n  engine: {{ docker: {{}} }}\nphases:\n  - id: main\n    steps:\n      - id: snap\n        redis.snapshot: {{ target: src, to: snapshots, method: bgsave, container: {{ docker: engine, name: \"{}\" }}, copy_to: {{ docker: engine, container: \"{}\", path: / }} }}\n",
        topo.source.host_url(),
        topo.source.name,
        topo.target.name
    ));
    ws.run().success();
    assert_eq!(ws.value_number("snap", "changed"), 0.0);
    // The copy on the other host (container) is the same file.
    let copied = text(&ws, "copied_to");
    let fetched = ws.path().join("fetched.rdb");
    redis_move_testbed::topology::docker_cli(&["cp", &copied, fetched.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(written(&ws)).unwrap(),
        "{copied}"
    );
    let back = restored(&written(&ws));
    assert_same(
        &before,
        &snapshot(&mut connect(&back.url()), "*"),
        <[u8]>::to_vec,
        5000,
    );
}

#[test]
fn a_snapshot_is_verified_in_the_targets_database_and_counted_in_every_other() {
    let source = RedisServer::start_with(Some(PASSWORD), &["--enable-debug-command", "yes"]);
    source.cli(&["-n", "3", "DEBUG", "POPULATE", "50", "in3", "8"]);
    source.cli(&["-n", "5", "SET", "other", "db"]);
    let ws = Workspace::new(&format!(
        "version: 1\nname: snap\nsecrets:\n  pw: {{ env: SNAP_PW }}\ntargets:\n  src: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}/3\" }} }}\nphases:\n  - id: main\n    steps:\n      - id: snap\n        redis.snapshot: {{ target: src, to: snapshots }}\n",
        source.port
    ))
    .with_env("SNAP_PW", PASSWORD);
    ws.run().success();
    assert_eq!(ws.value_number("snap", "keys"), 50.0);
    assert_eq!(ws.value_number("snap", "changed"), 0.0);
}
