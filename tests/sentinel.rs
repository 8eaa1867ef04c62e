//! A Sentinel-managed primary moved to a chosen replica with `redis.failover`, against a
//! real Sentinel setup (3 Sentinels, a primary, 2 replicas on loopback ports) under a
//! steady writer that follows the primary: no acknowledged write lost, every Sentinel
//! reporting the new primary; then the rollback fails back the same way.

use std::time::Duration;

use redis_move_testbed::producer::{Acked, Producer, missing_from};
use redis_move_testbed::sentinel::{LocalSentinels, MASTER};
use redis_move_testbed::{RedisServer, Workspace};

/// Acknowledged writes missing from `server`.
fn missing(acked: &[Acked], server: &RedisServer) -> Vec<String> {
    missing_from(acked, server, "produced")
}

#[test]
fn a_failover_to_a_chosen_replica_loses_no_acknowledged_write_and_rolls_back() {
    let setup = LocalSentinels::start();
    let original = format!("127.0.0.1:{}", setup.nodes[0].port);
    let chosen = format!("127.0.0.1:{}", setup.nodes[2].port);
    let addresses: Vec<String> = setup
        .addresses()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let ws = Workspace::new(&format!(
        "version: 1\nname: failover\ntargets:\n  queue:\n    redis:\n      url: \"redis://127.0.0.1:1\"\n      sentinel: {{ addresses: [{}], master: {MASTER} }}\nphases:\n  - id: switch\n    steps:\n      - id: failover\n        redis.failover: {{ target: queue, to: \"{chosen}\" }}\n      - id: role\n        redis.info: {{ target: queue, field: replication.role }}\n        expect: master\n      - id: where\n        redis.config_get: {{ target: queue, parameter: port }}\n        expect: \"== {}\"\n",
        addresses.join(", "),
        setup.nodes[2].port
    ));
    let mut producer = Producer::start(setup.urls(), "produced", "p", Some(500));
    producer.wait_for_more(200, Duration::from_secs(30));
    ws.run().success();
    assert!(
        setup.reported_primaries().iter().all(|p| *p == chosen),
        "{:?}",
        setup.reported_primaries()
    );
    producer.wait_for_more(200, Duration::from_secs(30));
    let acked = producer.stop();
    let lost = missing(&acked, setup.node(&chosen));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    // The priorities are back (the Sentinels' defaults).
    for node in &setup.nodes {
        assert_eq!(
            node.cli(&["CONFIG", "GET", "replica-priority"])
                .lines()
                .nth(1),
            Some("100")
        );
    }

    // The rollback fails back the same way, under a writer again.
    let mut producer = Producer::start(setup.urls(), "produced", "q", Some(500));
    producer.wait_for_more(200, Duration::from_secs(30));
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    assert!(
        setup.reported_primaries().iter().all(|p| *p == original),
        "{:?}",
        setup.reported_primaries()
    );
    producer.wait_for_more(200, Duration::from_secs(30));
    let acked = producer.stop();
    let lost = missing(&acked, setup.node(&original));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}
