//! `redis-move init`: each template written, as the files it writes (snapshots), valid
//! without a warning and planned with its vars file; one runs end to end against a real
//! redis-server; and what it refuses.

use std::path::Path;

use assert_cmd::Command;
use redis_move_testbed::RedisServer;

fn redis_move(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("redis-move").unwrap();
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    cmd
}

/// The files `init TEMPLATE` writes with `vars`, validated and planned.
fn init(dir: &Path, template: &str, vars: &[&str]) -> (String, String) {
    let mut cmd = redis_move(dir);
    cmd.args(["init", template, "--no-input", "--out", "runbooks/new.yaml"]);
    for var in vars {
        cmd.args(["--var", var]);
    }
    let output = cmd.assert().success().get_output().clone();
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(written.contains("runbooks/new.yaml"), "{written}");
    assert!(written.contains("runbooks/new.vars.yaml"), "{written}");
    assert!(dir.join("runbooks/runbook.schema.json").is_file());
    let with_vars = ["runbooks/new.yaml", "--vars-file", "runbooks/new.vars.yaml"];
    redis_move(dir)
        .env("REDIS_PASSWORD", "unused")
        .env(
            "MANAGED_REDIS_URL",
            "rediss://default:unused@managed.example:6379",
        )
        .args(["validate", "--deny-warnings"])
        .args(with_vars)
        .assert()
        .success();
    redis_move(dir)
        .env("REDIS_PASSWORD", "unused")
        .env(
            "MANAGED_REDIS_URL",
            "rediss://default:unused@managed.example:6379",
        )
        .arg("plan")
        .args(with_vars)
        .assert()
        .success();
    (
        std::fs::read_to_string(dir.join("runbooks/new.yaml")).unwrap(),
        std::fs::read_to_string(dir.join("runbooks/new.vars.yaml")).unwrap(),
    )
}

#[test]
fn each_template_writes_a_runbook_that_validates_and_plans() {
    for (template, vars) in [
        (
            "docker-move",
            vec![
                "old_docker=ssh://ops@10.0.0.5",
                "new_docker=ssh://ops@10.0.0.6",
                "app=^shop-",
            ],
        ),
        (
            "managed-copy",
            vec!["source_url=redis://10.0.0.5:6379", "target_memory=2gb"],
        ),
        ("rename-keys", vec!["from=order:", "to=purchase:"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (runbook, vars) = init(dir.path(), template, &vars);
        assert!(runbook.starts_with("# yaml-language-server: $schema=./runbook.schema.json"));
        insta::assert_snapshot!(format!("{template}.runbook"), runbook);
        insta::assert_snapshot!(format!("{template}.vars"), vars);
    }
}

/// The rename-keys template, run for real: every `order:*` key ends up as `purchase:*`
/// with its content and TTL, the old keys are deleted after a verified snapshot.
#[test]
fn the_rename_keys_template_runs_end_to_end() {
    let server = RedisServer::start();
    for i in 0..200 {
        let _ = server.cli(&["HSET", &format!("order:{i}"), "total", &i.to_string()]);
    }
    let _ = server.cli(&["EXPIRE", "order:7", "3600"]);
    let _ = server.cli(&["SET", "other", "kept"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis_url=redis://127.0.0.1:{}", server.port);
    init(
        dir.path(),
        "rename-keys",
        &[&url, "from=order:", "to=purchase:"],
    );
    redis_move(dir.path())
        .args([
            "run",
            "runbooks/new.yaml",
            "--vars-file",
            "runbooks/new.vars.yaml",
            "--yes",
            "--no-progress",
        ])
        .assert()
        .success();
    assert_eq!(server.cli(&["HGET", "purchase:42", "total"]).trim(), "42");
    let ttl: i64 = server.cli(&["TTL", "purchase:7"]).trim().parse().unwrap();
    assert!((3000..=3600).contains(&ttl), "{ttl}");
    assert_eq!(server.cli(&["EXISTS", "order:42"]).trim(), "0");
    assert_eq!(server.cli(&["GET", "other"]).trim(), "kept");
    let dbsize: u64 = server.cli(&["DBSIZE"]).trim().parse().unwrap();
    assert_eq!(dbsize, 201);
    let snapshots = std::fs::read_dir(dir.path().join("runbooks/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(snapshots > 0, "the snapshot before the deletion is kept");
}

#[test]
fn init_refuses_what_it_cannot_do_well() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], says: &str| {
        let output = redis_move(dir.path())
            .args(args)
            .assert()
            .code(2)
            .get_output()
            .clone();
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.contains(says), "{args:?}: {text}");
    };
    refused(&["init", "--no-input"], "name a template");
    refused(&["init", "rename-key"], "did you mean `rename-keys`?");
    refused(
        &["init", "managed-copy", "--var", "sorce_url=x"],
        "did you mean `source_url`?",
    );
    refused(
        &["init", "rename-keys", "--name", "a b"],
        "cannot name a runbook",
    );
    redis_move(dir.path())
        .args(["init", "rename-keys", "--no-input"])
        .assert()
        .success();
    refused(
        &["init", "rename-keys", "--no-input"],
        "exists; give another --out, or --force",
    );
    redis_move(dir.path())
        .args(["init", "rename-keys", "--no-input", "--force"])
        .assert()
        .success();
    // A file name that is no runbook name gives one that is; a value with characters
    // YAML must escape reads back as given.
    redis_move(dir.path())
        .args([
            "init",
            "rename-keys",
            "--no-input",
            "--out",
            "ops/redis.prod.yaml",
        ])
        .args(["--var", "from=a\u{7f}b:"])
        .assert()
        .success();
    let written = std::fs::read_to_string(dir.path().join("ops/redis.prod.yaml")).unwrap();
    assert!(written.contains("name: \"redis-prod\""), "{written}");
    let plan = redis_move(dir.path())
        .args([
            "plan",
            "ops/redis.prod.yaml",
            "--vars-file",
            "ops/redis.prod.vars.yaml",
        ])
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan = String::from_utf8_lossy(&plan);
    assert!(plan.contains("a\u{7f}b:*"), "{plan}");
    // A schema of the team's own is kept without --force.
    std::fs::write(dir.path().join("ops/runbook.schema.json"), "{}").unwrap();
    redis_move(dir.path())
        .args([
            "init",
            "managed-copy",
            "--no-input",
            "--out",
            "ops/managed.yaml",
        ])
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ops/runbook.schema.json")).unwrap(),
        "{}"
    );
    // Nothing is written when the runbook would not validate.
    refused(
        &[
            "init",
            "managed-copy",
            "--no-input",
            "--out",
            "ops/bad.yaml",
            "--var",
            "watch=soon",
        ],
        "nothing was written",
    );
    assert!(!dir.path().join("ops/bad.yaml").exists());
    assert!(!dir.path().join("ops/bad.vars.yaml").exists());
    // A value that breaks the runbook is caught before anyone runs it.
    refused(
        &[
            "init",
            "managed-copy",
            "--no-input",
            "--force",
            "--var",
            "watch=soon",
        ],
        "would not validate",
    );
}
