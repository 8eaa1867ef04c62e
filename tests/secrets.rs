//! Secrets kept out of everything redis-move writes, and still usable where a rollback
//! needs their true value.

use redis_move_testbed::{RedisServer, Workspace};

/// A password a step replaced comes back on a rollback from a fresh process: it is kept
/// in the run's vault (owner-only), never in the journal, in clear or as `****`.
#[test]
fn a_replaced_password_is_restored_by_a_rollback_from_a_fresh_process() {
    let old = "Old-Pass-6161";
    let new = "New-Pass-7272";
    let server = RedisServer::start_with(Some(old), &[]);
    let ws = Workspace::new(&format!(
        r#"version: 1
name: rotate
secrets:
  old: {{ env: ROTATE_OLD }}
  new: {{ env: ROTATE_NEW }}
targets:
  r: {{ redis: {{ url: "redis://127.0.0.1:{port}", password: "${{secrets.old}}" }} }}
phases:
  - id: rotate
    steps:
      - {{ id: set-password, redis.config_set: {{ target: r, parameter: requirepass, value: "${{secrets.new}}" }} }}
      - {{ id: fails, tcp: {{ address: "127.0.0.1:1" }}, timeout: 1s }}
"#,
        port = server.port
    ))
    .with_env("ROTATE_OLD", old)
    .with_env("ROTATE_NEW", new);
    ws.run().code(1);
    let auth = |password: &str| {
        redis::Client::open(format!("redis://:{password}@127.0.0.1:{}", server.port))
            .and_then(|c| c.get_connection())
            .is_ok()
    };
    assert!(auth(new) && !auth(old), "the step changed the password");
    let run_dir = ws.run_dir().unwrap();
    let journal = std::fs::read_to_string(run_dir.join("journal.json")).unwrap();
    assert!(
        !journal.contains(old) && !journal.contains(new),
        "{journal}"
    );
    assert!(
        journal.contains("vault:set-password/requirepass"),
        "{journal}"
    );
    // Rolled back by hand from another process: it reads the vault. The target is
    // reached with the old password (the runbook's), which the server no longer takes,
    // so the rollback is told the new one through the same secret, as an operator would.
    let out = ws
        .cmd(&["rollback", "--yes", "--no-progress"])
        .env("ROTATE_OLD", new)
        .assert()
        .code(3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        auth(old) && !auth(new),
        "the old password is back: {stderr}"
    );
    assert!(!stderr.contains(old) && !stderr.contains(new), "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(run_dir.join("vault.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "vault.json is readable by its owner only");
}
