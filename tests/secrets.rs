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
    let journal = redis_move_testbed::workspace::journal_text(&run_dir);
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

/// Canaries in every place a runbook can carry a secret; every command in every output
/// mode; then everything written (streams, and every file under the workspace: state
/// directory, reports, plan and JUnit files) is searched for each canary.
#[tokio::test]
async fn canary_secrets_never_appear_in_anything_written() {
    let Some(engine) = redis_move_testbed::docker::engine().await else {
        return;
    };
    const URL_PASSWORD: &str = "CanaryUrlPw1";
    const CANARIES: &[(&str, &str)] = &[
        ("CANARY_HEADER", "CanaryHeader2"),
        ("CANARY_ARG", "CanaryArg3"),
        ("CANARY_TITLE", "CanaryTitle4"),
        ("CANARY_QUESTION", "CanaryQuestion5"),
        ("CANARY_EXPECT", "CanaryExpect6"),
        ("CANARY_NEWAUTH", "CanaryNewAuth7"),
        ("CANARY_ENV", "CanaryEnv8"),
        ("CANARY_FILE", "CanaryFile9"),
    ];
    // Not declared anywhere: the value a step replaces, and a selected container's env.
    const PREVIOUS: &str = "CanaryPrevious10";
    const UNDECLARED: &str = "CanaryUndeclared11";
    let server = RedisServer::start_with(Some(URL_PASSWORD), &[]);
    server.cli(&["CONFIG", "SET", "masterauth", PREVIOUS]);
    let http = redis_move_testbed::http::HttpStub::start(
        vec![redis_move_testbed::http::Route::new("/ok", 200, "{}")],
        None,
    );
    let image = redis_move_testbed::docker::redis_image(&engine).await;
    let prefix = redis_move_testbed::unique_name("canary");
    let planted = format!("{prefix}-planted");
    let created = format!("{prefix}-created");
    let _guard = redis_move_testbed::ContainerGuard::new([planted.clone(), created.clone()]);
    redis_move_testbed::topology::docker_cli(&[
        "run",
        "-d",
        "--name",
        &planted,
        "-e",
        &format!("API_TOKEN={UNDECLARED}"),
        "-e",
        &format!("DATABASE_URL=postgres://app:{UNDECLARED}@db/app"),
        &image.reference,
        "/usr/bin/redis-server",
        "--port",
        "7000",
        "--save",
        "",
    ]);
    let runbook = format!(
        r#"version: 1
name: canary
vars:
  source_url: "redis://127.0.0.1:1"
  label: "${{secrets.title}}"
  api: "{api}"
secrets:
  header: {{ env: CANARY_HEADER }}
  arg: {{ env: CANARY_ARG }}
  title: {{ env: CANARY_TITLE }}
  question: {{ env: CANARY_QUESTION }}
  expected: {{ env: CANARY_EXPECT }}
  newauth: {{ env: CANARY_NEWAUTH }}
  envval: {{ env: CANARY_ENV }}
  file: {{ env: CANARY_FILE }}
targets:
  r: {{ redis: {{ url: "${{vars.source_url}}" }} }}
  app: {{ docker: {{}} }}
phases:
  - id: checks
    title: "Checks for ${{vars.label}}"
    steps:
      - {{ id: ping, redis.ping: {{ target: r }}, expect: "< 5s" }}
      - {{ id: echo, title: "echo ${{vars.label}}", redis.command: {{ target: r, args: [ECHO, "${{secrets.arg}}"], read_only: true }}, expect: "!= ${{secrets.expected}}" }}
      - {{ id: api, http: {{ url: "${{vars.api}}/ok", headers: {{ Authorization: "Bearer ${{secrets.header}}" }} }} }}
      - {{ id: listed, docker.containers: {{ target: app, name: "^{planted}$" }}, expect: {{ count: 1 }} }}
  - id: go
    gate: {{ question: "Go with ${{secrets.question}}?" }}
  - id: change
    on_failure: rollback
    steps:
      - {{ id: auth, redis.config_set: {{ target: r, parameter: masterauth, value: "${{secrets.newauth}}" }} }}
      - id: container
        docker.run:
          target: app
          image: "{image}"
          name: "{created}"
          env: {{ API_TOKEN: "${{secrets.envval}}" }}
          files: {{ /etc/canary.conf: "token ${{secrets.file}}" }}
          cmd: [/usr/bin/redis-server, --port, "7001", --save, ""]
      - {{ id: boom, tcp: {{ address: "127.0.0.1:1" }}, timeout: 1s }}
"#,
        api = http.url(false),
        image = image.reference,
    );
    let mut ws = Workspace::new(&runbook);
    for (name, value) in CANARIES {
        ws = ws.with_env(name, value);
    }
    std::fs::write(
        ws.path().join("vars.yaml"),
        format!(
            "source_url: \"redis://:{URL_PASSWORD}@127.0.0.1:{}\"\n",
            server.port
        ),
    )
    .unwrap();
    let mut streams: Vec<(String, String)> = Vec::new();
    let mut record = |what: &str, out: &std::process::Output| {
        streams.push((
            what.to_owned(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    };
    let vars = ["--vars-file", "vars.yaml"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(vars.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let run = |args: Vec<String>, rust_log: Option<&str>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = ws.cmd(&refs);
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        cmd.output().unwrap()
    };
    record("plan", &run(with(&["plan", "runbook.yaml"]), None));
    record(
        "plan json",
        &run(
            with(&[
                "plan",
                "runbook.yaml",
                "--format",
                "json",
                "--out",
                "plan.json",
            ]),
            None,
        ),
    );
    record(
        "plan --check",
        &run(with(&["plan", "runbook.yaml", "--check", "-vv"]), None),
    );
    record("graph", &run(with(&["graph", "runbook.yaml"]), None));
    record(
        "dry run",
        &run(
            with(&["run", "runbook.yaml", "--dry-run", "--no-progress", "-vv"]),
            None,
        ),
    );
    let failing = run(
        with(&[
            "run",
            "runbook.yaml",
            "--yes",
            "--no-progress",
            "-v",
            "--log-format",
            "json",
            "--junit",
            "junit.xml",
        ]),
        None,
    );
    assert_eq!(
        failing.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&failing.stderr)
    );
    // It did everything: the checks, the changes, then the rollback.
    let text = String::from_utf8_lossy(&failing.stderr).to_string()
        + &String::from_utf8_lossy(&failing.stdout);
    for done in ["echo", "api", "listed", "auth", "container"] {
        assert!(
            text.contains(&format!("\"step\":\"{done}\"")) || text.contains(&format!("ok {done}")),
            "step {done} did not run: {text}"
        );
    }
    assert_eq!(
        http.requests.lock().unwrap().first().map(String::as_str),
        Some("GET /ok"),
        "the request with the header was sent"
    );
    record("run -v json, rolled back", &failing);
    record(
        "run RUST_LOG=trace, rolled back",
        &run(
            with(&["run", "runbook.yaml", "--yes", "--no-progress", "-vv"]),
            Some("trace"),
        ),
    );
    // Stopped at the gate, then resumed by a fresh process.
    let stopped = run(
        with(&["run", "runbook.yaml", "--no-input", "--no-progress"]),
        None,
    );
    assert_eq!(
        stopped.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    record("run stopped at the gate", &stopped);
    let resumed = run(
        vec![
            "resume".into(),
            "--approve".into(),
            "go".into(),
            "--yes".into(),
            "--no-progress".into(),
            "-vv".into(),
            "--vars-file".into(),
            "vars.yaml".into(),
        ],
        Some("trace"),
    );
    record("resume from a fresh process", &resumed);
    record("status", &run(vec!["status".into()], None));
    record(
        "status json",
        &run(
            vec!["status".into(), "--format".into(), "json".into()],
            None,
        ),
    );
    record(
        "report",
        &run(
            vec!["report".into(), "--junit".into(), "junit-2.xml".into()],
            None,
        ),
    );
    // The progress display on a terminal (a pty through `script`).
    if let Ok(out) = std::process::Command::new("script")
        .current_dir(ws.path())
        .envs(CANARIES.iter().map(|(k, v)| (*k, *v)))
        .env("NO_COLOR", "1")
        .args(["-qec"])
        .arg(format!(
            "{} run runbook.yaml --yes --vars-file vars.yaml",
            assert_cmd::cargo::cargo_bin("redis-move").display()
        ))
        .arg("/dev/null")
        .output()
    {
        record("run under a pty", &out);
    }
    // The rollbacks put the replaced value back, and removed the container.
    assert_eq!(
        server.cli(&["CONFIG", "GET", "masterauth"]).lines().nth(1),
        Some(PREVIOUS)
    );
    // Everything written on disk under the workspace.
    let mut files = Vec::new();
    let mut stack = vec![ws.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n != "runbook.yaml" && n != "vars.yaml")
            {
                files.push(path);
            }
        }
    }
    let mut searched: Vec<(String, String)> = streams;
    let mut vaults = 0;
    for path in &files {
        let name = path.strip_prefix(ws.path()).unwrap().display().to_string();
        if name.ends_with("vault.json") {
            // The one place a replaced value is kept, readable by its owner only.
            vaults += 1;
            continue;
        }
        searched.push((
            name,
            String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned(),
        ));
    }
    assert!(vaults >= 1, "the replaced masterauth was kept in a vault");
    let all: Vec<&str> = CANARIES
        .iter()
        .map(|(_, v)| *v)
        .chain([URL_PASSWORD, PREVIOUS, UNDECLARED])
        .collect();
    let mut leaks = Vec::new();
    for (what, text) in &searched {
        for canary in &all {
            if text.contains(canary) {
                leaks.push(format!("{canary} in {what}"));
            }
        }
    }
    let names: Vec<&str> = searched.iter().map(|(w, _)| w.as_str()).collect();
    eprintln!(
        "searched {} outputs and files: {}",
        names.len(),
        names.join(", ")
    );
    assert!(leaks.is_empty(), "leaked: {leaks:#?}");
    assert!(names.len() >= 20, "too little was searched: {names:?}");
}

/// Vars from a vars file that interpolate a secret are journaled as written (the
/// reference, not the filled-in value): a resume and a rollback from fresh processes
/// need only the secret in the environment. A password written literally in a var is
/// not journaled: it must be given again, and `--vars-file` does it as well as `--var`,
/// for `resume` and for `rollback`.
#[test]
fn resume_and_rollback_from_fresh_processes_take_vars_as_run_did() {
    let password = "Resume-Pw-8383";
    let server = RedisServer::start_with(Some(password), &[]);
    let runbook = r#"version: 1
name: fresh
vars:
  url: "redis://127.0.0.1:1"
secrets:
  pw: { env: FRESH_PW }
targets:
  r: { redis: { url: "${vars.url}" } }
phases:
  - id: check
    steps:
      - { id: ping, redis.ping: { target: r } }
  - id: go
    gate: { question: "Go?" }
  - id: change
    steps:
      - { id: memory, redis.config_set: { target: r, parameter: maxmemory, value: 1gb } }
      - { id: fails, tcp: { address: "127.0.0.1:1" }, timeout: 1s }
"#;
    let ws = Workspace::new(runbook).with_env("FRESH_PW", password);
    std::fs::write(
        ws.path().join("vars.yaml"),
        format!(
            "url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\"\n",
            server.port
        ),
    )
    .unwrap();
    let stopped = ws
        .cmd(&[
            "run",
            "runbook.yaml",
            "--vars-file",
            "vars.yaml",
            "--no-input",
            "--no-progress",
        ])
        .assert()
        .code(4);
    let _ = stopped;
    let journal = redis_move_testbed::workspace::journal_text(&ws.run_dir().unwrap());
    assert!(
        journal.contains("${secrets.pw}"),
        "the reference is journaled: {journal}"
    );
    assert!(!journal.contains(password));
    // A fresh process, with only the secret in its environment.
    ws.cmd(&["resume", "--approve", "go", "--yes", "--no-progress"])
        .assert()
        .code(1);
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]).lines().nth(1),
        Some("1073741824")
    );
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]).lines().nth(1),
        Some("0")
    );

    // The password written literally: not journaled, so given again.
    let literal = format!("url=redis://:{password}@127.0.0.1:{}", server.port);
    let ws = Workspace::new(runbook).with_env("FRESH_PW", password);
    std::fs::write(
        ws.path().join("vars.yaml"),
        format!("url: \"redis://:{password}@127.0.0.1:{}\"\n", server.port),
    )
    .unwrap();
    ws.cmd(&[
        "run",
        "runbook.yaml",
        "--var",
        &literal,
        "--no-input",
        "--no-progress",
    ])
    .assert()
    .code(4);
    let journal = redis_move_testbed::workspace::journal_text(&ws.run_dir().unwrap());
    assert!(!journal.contains(password), "{journal}");
    let refused = ws
        .cmd(&["resume", "--approve", "go", "--yes", "--no-progress"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).to_string();
    assert!(stderr.contains("give it again"), "{stderr}");
    ws.cmd(&[
        "resume",
        "--approve",
        "go",
        "--yes",
        "--no-progress",
        "--vars-file",
        "vars.yaml",
    ])
    .assert()
    .code(1);
    ws.cmd(&["rollback", "--yes", "--no-progress", "--var", &literal])
        .assert()
        .code(3);
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]).lines().nth(1),
        Some("0")
    );
}
