//! End-to-end tests of the command line: exit codes, output formats, secrets.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const RUNBOOK: &str = "runbooks/vps01-to-vps.yaml";

fn redis_move() -> Command {
    let mut cmd = Command::cargo_bin("redis-move").expect("binary built");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

#[test]
fn shipped_runbooks_are_valid() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                name.ends_with(".yaml")
                    && !name.contains(".sandbox.")
                    && !name.contains(".production.")
            })
            .map(|p| format!("runbooks/{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
    files.sort();
    assert!(!files.is_empty());
    redis_move()
        .arg("validate")
        .args(&files)
        .arg("--deny-warnings")
        .assert()
        .success()
        .stderr(predicate::str::contains("0 invalid"));
}

#[test]
fn validate_exit_codes() {
    redis_move().args(["validate", RUNBOOK]).assert().code(0);
    redis_move()
        .args(["validate", "tests/invalid/many-problems.yaml"])
        .assert()
        .code(1);
    redis_move()
        .args(["validate", "tests/invalid/does-not-exist.yaml"])
        .assert()
        .code(2);
    redis_move().args(["validate"]).assert().code(2);
    redis_move()
        .args(["validate", RUNBOOK, "--format", "yaml"])
        .assert()
        .code(2);
    // One invalid file among valid ones makes the whole run fail, and both are reported.
    redis_move()
        .args(["validate", RUNBOOK, "tests/invalid/unknown-target.yaml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "runbooks/vps01-to-vps.yaml: valid",
        ))
        .stderr(predicate::str::contains("unknown target `old_redsi`"));
}

#[test]
fn validate_github_annotations() {
    redis_move()
        .args(["validate", "--format", "github", "tests/invalid/unknown-target.yaml"])
        .assert()
        .code(1)
        .stdout(predicate::str::starts_with(
            "::error file=tests/invalid/unknown-target.yaml,line=10,col=31,title=unknown-target::unknown target `old_redsi`",
        ));
}

#[test]
fn validate_json_lists_every_problem() {
    let output = redis_move()
        .args([
            "validate",
            "--format",
            "json",
            "tests/invalid/many-problems.yaml",
        ])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let diagnostics: serde_json::Value = serde_json::from_slice(&output).unwrap();
    let codes: Vec<&str> = diagnostics
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "missing-field",
            "unknown-field",
            "unknown-target",
            "expect-mismatch",
            "duplicate-id",
            "unknown-phase"
        ]
    );
    assert_eq!(diagnostics[1]["line"], 8);
    assert_eq!(diagnostics[1]["help"], "did you mean `name`?");
}

#[test]
fn plan_of_an_invalid_runbook_is_a_usage_error() {
    redis_move()
        .args(["plan", "tests/invalid/unknown-target.yaml"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("is not a valid runbook (1 error)"));
}

#[test]
fn plan_is_deterministic_and_dry_run_is_the_same() {
    let first = redis_move()
        .args(["plan", RUNBOOK])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let second = redis_move()
        .args(["plan", RUNBOOK])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let dry_run = redis_move()
        .args(["run", "--dry-run", RUNBOOK])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(first, second);
    assert_eq!(first, dry_run);
    let text = String::from_utf8(first).unwrap();
    assert!(text.contains(
        "docker vps01: recreate containers matching /^fiskai-worker/ with REDIS_URL=redis://:****@100.120.14.126:6379"
    ));
    assert!(text.contains("rollback: recreate with the previous configuration"));
}

#[test]
fn plan_out_records_the_runbook_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan.json");
    redis_move()
        .args(["plan", RUNBOOK, "--format", "json", "--out"])
        .arg(&out)
        .assert()
        .success();
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(RUNBOOK)).unwrap();
    assert_eq!(
        plan["runbook"]["sha256"],
        redis_move::runbook::hex_sha256(&bytes)
    );
    assert_eq!(plan["format"], 1);
    assert_eq!(plan["phases"][0]["steps"][0]["verification"], "verified");
}

#[test]
fn secrets_and_url_passwords_never_appear() {
    let secret = "s3cret-Value-91";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan.json");
    let assert = redis_move()
        .env("REDIS_PASSWORD", secret)
        .args(["plan", RUNBOOK, "--out"])
        .arg(&out)
        .args([
            "--var",
            &format!("old_redis_url=redis://admin:{secret}@10.0.0.9:6379"),
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    let saved = std::fs::read_to_string(&out).unwrap();
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("plan.json", &saved),
    ] {
        assert!(!text.contains(secret), "{what} shows the secret");
    }
    assert!(
        stdout.contains("redis://admin:****@10.0.0.9:6379"),
        "{stdout}"
    );
}

#[test]
fn var_overrides_apply_and_typos_are_refused() {
    redis_move()
        .args(["plan", RUNBOOK, "--var", "stability_watch=45s"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wait: 45s"))
        .stdout(predicate::str::is_match(r"stability_watch +45s  \(from --var\)").unwrap());
    redis_move()
        .args(["plan", RUNBOOK, "--var", "stabilty_watch=45s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `stability_watch`?"));
    redis_move()
        .args(["plan", RUNBOOK, "--var", "novalue"])
        .assert()
        .code(2);
}

#[test]
fn vars_files_apply() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.yaml");
    std::fs::write(&vars, "min_workers: 3\nstability_watch: 20s\n").unwrap();
    redis_move()
        .args(["plan", RUNBOOK, "--vars-file"])
        .arg(&vars)
        .assert()
        .success()
        .stdout(predicate::str::contains("expect: count >= 3"))
        .stdout(predicate::str::contains("wait: 20s"));
    std::fs::write(&vars, "min_workers: [3]\n").unwrap();
    redis_move()
        .args(["plan", RUNBOOK, "--vars-file"])
        .arg(&vars)
        .assert()
        .code(2);
}

#[test]
fn graph_formats() {
    redis_move()
        .args(["graph", RUNBOOK])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("flowchart TD"))
        .stdout(predicate::str::contains(
            "cutover__stop_workers --> cutover__promote",
        ))
        .stdout(predicate::str::contains("go__go{"));
    redis_move()
        .args(["graph", RUNBOOK, "--format", "dot"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("digraph runbook {"));
}

#[test]
fn schema_and_completions() {
    let output = redis_move()
        .arg("schema")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let schema: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(schema["title"], "redis-move runbook");
    redis_move()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("redis-move"));
}

#[test]
fn help_shows_examples_and_exit_codes() {
    redis_move()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("4 stopped at a gate"));
}

#[test]
fn plan_check_runs_the_probes_live_and_never_shows_the_secret() {
    let secret = "Pw-for-check-77";
    let server = redis_move_testbed::RedisServer::start_with(Some(secret), &[]);
    server.cli(&["RPUSH", "bull:ocr:wait", "1", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("check.yaml");
    let write = |expect_wait: u32| {
        std::fs::write(
            &runbook,
            format!(
                "version: 1\nname: check\nsecrets:\n  pw: {{ env: CHECK_PW }}\ntargets:\n  r: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\" }} }}\nphases:\n  - id: p\n    steps:\n      - {{ id: ping, redis.ping: {{}}, expect: \"< 600ms\" }}\n      - {{ id: depth, redis.queues: {{}}, expect: {{ total: {{ waiting: \"== {expect_wait}\" }} }} }}\n      - {{ id: flag, redis.command: {{ args: [SET, flag, on] }}, rollback: none }}\n",
                server.port
            ),
        )
        .unwrap();
    };
    write(2);
    let assert = redis_move()
        .env("CHECK_PW", secret)
        .args(["plan", "--check"])
        .arg(&runbook)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(stdout.contains("check: passed"), "{stdout}");
    assert!(
        stdout.contains("Live check: 2 passed, 0 failed, 0 could not run, 0 skipped"),
        "{stdout}"
    );
    assert!(!stdout.contains(secret));
    // The mutating step was not performed.
    assert_eq!(server.cli(&["EXISTS", "flag"]).trim(), "0");
    write(5);
    redis_move()
        .env("CHECK_PW", secret)
        .args(["plan", "--check", "--format", "json"])
        .arg(&runbook)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\"status\": \"failed\""))
        .stdout(predicate::str::contains(secret).not());
    // Without the secret the probes are skipped, not failed.
    redis_move()
        .env_remove("CHECK_PW")
        .args(["plan", "--check"])
        .arg(&runbook)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "0 passed, 0 failed, 0 could not run, 2 skipped",
        ));
}

#[test]
fn every_vars_file_fits_its_runbook() {
    let vars = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/vars");
    let mut checked = 0;
    for entry in std::fs::read_dir(&vars).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let runbook = file.split('.').next().unwrap();
        redis_move()
            .env("REDIS_PASSWORD", "x")
            .args(["plan", &format!("runbooks/{runbook}.yaml"), "--vars-file"])
            .arg(&path)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .assert()
            .success();
        checked += 1;
    }
    assert!(checked >= 5, "{checked} vars files");
}

#[test]
fn an_unknown_from_step_or_approved_gate_is_a_usage_error_before_anything_runs() {
    let state = tempfile::tempdir().unwrap();
    for (flag, given, meant) in [("--from", "promot", "promote"), ("--approve", "goo", "go")] {
        redis_move()
            .args(["run", RUNBOOK, flag, given, "--state-dir"])
            .arg(state.path())
            .env("REDIS_PASSWORD", "x")
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "`{flag} {given}` names no"
            )))
            .stderr(predicate::str::contains(format!("did you mean `{meant}`?")));
    }
    // Nothing ran: no run was even journaled.
    assert!(
        !state.path().join("runs").exists()
            || std::fs::read_dir(state.path().join("runs"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_mutating_selection_that_resolves_to_every_container_is_refused_at_run_time() {
    // The name comes from the environment, empty: validation cannot see it, the run
    // refuses it before asking the engine for anything.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runbook.yaml"),
        "version: 1\nname: sel\ntargets:\n  host: { docker: { host: \"unix:///nonexistent.sock\" } }\nphases:\n  - id: p\n    steps:\n      - id: stop\n        docker.stop: { name: \"${env.REDIS_MOVE_TEST_WORKERS}\" }\n",
    )
    .unwrap();
    let mut cmd = Command::cargo_bin("redis-move").unwrap();
    cmd.current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("REDIS_MOVE_TEST_WORKERS", "")
        .args(["run", "runbook.yaml", "--no-progress"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "refused: the selection would take every container of the engine (`name` resolved to ``)",
        ));
}

/// A vars file naming a var the runbook does not declare: the error points into the
/// vars file, at the name.
#[test]
fn an_unknown_var_in_a_vars_file_points_into_the_vars_file() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("prod.yaml");
    std::fs::write(&vars, "workers: \"^w\"\nworkerz: 3\n").unwrap();
    let assert = redis_move()
        .args(["validate", "runbooks/vps01-to-vps.yaml", "--vars-file"])
        .arg(&vars)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        stderr.contains(&format!("{}:2:1]", vars.display())),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `workers`?"), "{stderr}");
    assert!(
        stderr.contains("validated 1 runbook: 1 invalid"),
        "{stderr}"
    );
}

/// The manual pages under docs/man are what `redis-move man --out-dir` writes now (one
/// per command), and `man` renders each without a warning.
#[test]
fn the_committed_man_pages_are_current_and_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("redis-move")
        .unwrap()
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .assert()
        .success();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let names = |d: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let stale =
        "docs/man is stale: run `cargo run -- man --out-dir docs/man` (after `rm docs/man/*`)";
    assert_eq!(names(dir.path()), names(&committed), "{stale}");
    assert!(names(&committed).contains(&"redis-move-run.1".to_owned()));
    for name in names(dir.path()) {
        let fresh = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        let kept = std::fs::read_to_string(committed.join(&name)).unwrap();
        assert!(fresh == kept, "{name}: {stale}");
        let rendered = std::process::Command::new("man")
            .args(["--warnings", "-l"])
            .arg(committed.join(&name))
            .env("MANWIDTH", "80")
            .output()
            .expect("man runs (apt-get install man-db)");
        assert!(rendered.status.success(), "{name}: {rendered:?}");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(warnings.trim().is_empty(), "{name}: man warns: {warnings}");
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("NAME"), "{name}: {text}");
    }
}

/// The GitHub Action's commands (action.yml runs scripts/action/*.sh), run here as the
/// action runs them: the shipped runbooks validate; an invalid one fails the job with
/// an annotation on its line; a glob matching nothing fails it; a redis-move of the
/// wanted version on PATH is kept, and without one it is built with `cargo install
/// --locked` from the action's checkout.
#[test]
fn the_github_action_validates_with_annotations_and_fails_on_errors() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = assert_cmd::cargo::cargo_bin("redis-move");
    let validate = |dir: &Path, files: &str| {
        std::process::Command::new("bash")
            .arg(repo.join("scripts/action/validate.sh"))
            .current_dir(dir)
            .env("REDIS_MOVE", &binary)
            .env("INPUT_FILES", files)
            .env("INPUT_DENY_WARNINGS", "true")
            .output()
            .unwrap()
    };
    let shipped = validate(repo, "runbooks/*.yaml");
    let text = String::from_utf8_lossy(&shipped.stdout);
    assert!(shipped.status.success(), "{text}");
    assert!(
        text.contains("validate --format github --deny-warnings runbooks/"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ops/cutovers")).unwrap();
    std::fs::copy(
        repo.join("runbooks/upstash-redis.yaml"),
        dir.path().join("ops/good.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ops/cutovers/bad.yaml"),
        "version: 1\nname: bad\nphases:\n  - id: p\n    steps:\n      - { id: s, redis.pingg: {} }\n",
    )
    .unwrap();
    let failed = validate(dir.path(), "ops/*.yaml\nops/**/bad.yaml");
    let text = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    assert!(
        text.contains("::error file=ops/cutovers/bad.yaml,line=6,"),
        "{text}"
    );
    // A runbook `init` wrote is validated with the vars file beside it, which is not
    // taken for a runbook; a file that does not exist fails the job.
    let team = tempfile::tempdir().unwrap();
    Command::cargo_bin("redis-move")
        .unwrap()
        .current_dir(team.path())
        .args([
            "init",
            "rename-keys",
            "--no-input",
            "--out",
            "runbooks/keys.yaml",
        ])
        .args(["--var", "from=order:", "--var", "to=purchase:"])
        .assert()
        .success();
    let own = validate(team.path(), "runbooks/*.yaml");
    let text = String::from_utf8_lossy(&own.stdout);
    assert!(own.status.success(), "{text}");
    assert!(
        text.contains("--vars-file runbooks/keys.vars.yaml runbooks/keys.yaml"),
        "{text}"
    );
    assert!(!text.contains("runbooks/keys.vars.yaml\n"), "{text}");
    let missing = validate(team.path(), "runbooks/keys.yaml runbooks/gone.yaml");
    let text = String::from_utf8_lossy(&missing.stdout);
    assert_eq!(missing.status.code(), Some(2), "{text}");
    assert!(text.contains("::error file=runbooks/gone.yaml"), "{text}");
    let nothing = validate(dir.path(), "ops/*.yml");
    let text = String::from_utf8_lossy(&nothing.stdout);
    assert_eq!(nothing.status.code(), Some(2), "{text}");
    assert!(text.contains("`ops/*.yml` matches no file"), "{text}");
    // Installing: the right version on PATH is kept.
    let install = |path: &str, cargo: Option<&Path>| {
        let mut command = std::process::Command::new("bash");
        command
            .arg(repo.join("scripts/action/install.sh"))
            .env("PATH", path)
            .env("GITHUB_ACTION_PATH", repo)
            .env("REDIS_MOVE_ACTION_ROOT", dir.path().join("tools"))
            .env("INPUT_VERSION", "source")
            .env_remove("GITHUB_PATH");
        if let Some(cargo) = cargo {
            command.env("CARGO", cargo);
        }
        command.output().unwrap()
    };
    let system = std::env::var("PATH").unwrap_or_default();
    let with_binary = format!("{}:{system}", binary.parent().unwrap().display());
    let kept = install(&with_binary, None);
    let text = String::from_utf8_lossy(&kept.stdout);
    assert!(kept.status.success(), "{text}");
    assert!(text.contains("is installed"), "{text}");
    // Without one: `cargo install --locked --path <the action's checkout>`; a cargo of
    // our own records the call and puts the built binary where cargo would.
    let fake = dir.path().join("fake-cargo");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\nmkdir -p \"$6/bin\" && cp {} \"$6/bin/redis-move\"\n",
            dir.path().join("cargo-args").display(),
            binary.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&fake)
        .status()
        .unwrap();
    let built = install("/usr/bin:/bin", Some(&fake));
    let text = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let args = std::fs::read_to_string(dir.path().join("cargo-args")).unwrap();
    assert_eq!(
        args.trim(),
        format!(
            "install --locked --path {} --root {}",
            repo.display(),
            dir.path().join("tools").display()
        )
    );
    assert!(text.contains("redis-move 0."), "{text}");
}
