//! Remote hosts for real: Docker actions on an `ssh://` engine through a real sshd on a
//! loopback port, a Redis reached through that host (`via:`), each way the SSH
//! connection can fail (its own message and exit code, no secret in any output); and a
//! second Docker Engine listening on TCP with mutual TLS, reached with the target's
//! certificates, with Docker's environment, and through a Docker context, and refused
//! with a client certificate of another CA.

use redis_move_testbed::engine::{EngineSpec, SecondEngine};
use redis_move_testbed::ssh::{SshServer, SshServerOptions};
use redis_move_testbed::tls::make_mutual_tls;
use redis_move_testbed::topology::docker_cli;
use redis_move_testbed::workspace::{journal_text, latest_run};
use redis_move_testbed::{ContainerGuard, Workspace, docker, free_port, unique_name};

/// A finished command's exit code and everything it printed (stdout, then stderr).
fn code_and_text(output: &std::process::Output) -> (Option<i32>, String) {
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The ssh processes redis-move started for `ssh` (their control directories name
/// them, their options the server's files) that are still alive.
fn leftover_ssh_processes(ssh: &SshServer) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-f", "redis-move-ssh-"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&ssh.dir().display().to_string()))
        .map(str::to_owned)
        .collect()
}

fn docker_target(ssh: &SshServer, key: &std::path::Path, known_hosts: &std::path::Path) -> String {
    format!(
        "{{ docker: {{ host: \"{url}\", ssh: {{ identity: \"{key}\", known_hosts: \"{known}\", connect_timeout: 10s }} }} }}",
        url = ssh.url(),
        key = key.display(),
        known = known_hosts.display(),
    )
}

#[tokio::test]
async fn docker_actions_and_a_redis_behind_the_host_over_ssh() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let Some(ssh) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    let image = docker::redis_image(&engine).await.reference;
    let redis = unique_name("ssh-redis");
    let _guard = ContainerGuard::new([redis.clone()]);
    let port = free_port();
    let runbook = format!(
        r#"version: 1
name: over-ssh
secrets:
  pw: {{ env: SSH_TEST_PW }}
targets:
  vps: {target}
  vps-redis:
    redis:
      url: "redis://:${{secrets.pw}}@127.0.0.1:{port}"
      via: vps
phases:
  - id: provision
    steps:
      - id: start-redis
        docker.run:
          target: vps
          image: "{image}"
          name: "{redis}"
          cmd: [/usr/bin/redis-server, --requirepass, "${{secrets.pw}}", --save, ""]
          ports: ["127.0.0.1:{port}:6379"]
          healthcheck: {{ test: [/usr/bin/redis-cli, -a, "${{secrets.pw}}", ping], interval: 1s, retries: 30 }}
          pull: never
        rollback: none
      - id: healthy
        docker.wait_healthy: {{ target: vps, name: "^{redis}$", timeout: 30s }}
  - id: use
    steps:
      - id: write
        redis.command: {{ target: vps-redis, args: [SET, moved, through-ssh] }}
        rollback: none
      - id: read-back
        docker.exec: {{ target: vps, container: "{redis}", cmd: [/usr/bin/redis-cli, -a, "${{secrets.pw}}", --no-auth-warning, GET, moved] }}
        expect: {{ exit_code: 0, stdout: {{ contains: through-ssh }} }}
        rollback: none
      - id: listed
        docker.containers: {{ target: vps, name: "^{redis}$" }}
        expect: {{ count: "== 1" }}
      - id: keys
        redis.dbsize: {{ target: vps-redis }}
        expect: "== 1"
      # Run with umask 000: the forward's sockets and their directory (this run's, named
      # by its master ssh) are still this user's alone: they reach the host's engine and
      # its Redis.
      - id: private
        shell:
          read_only: true
          script: |
            d=$(pgrep -af -- '[-]M -T -S' | grep -F '{sshdir}' | head -1 | sed -E 's/.* -S ([^ ]+)\/master .*/\1/')
            test -d "$d" || exit 3
            test -z "$(find "$d" -maxdepth 0 -perm /077)" || exit 4
            test -z "$(find "$d" -name '*.sock' -perm /077)" || exit 5
            test -n "$(find "$d" -name 'redis-*.sock')" || exit 6
"#,
        target = docker_target(&ssh, &ssh.key, &ssh.known_hosts),
        sshdir = ssh.dir().display(),
    );
    let workspace = Workspace::new(&runbook).with_env("SSH_TEST_PW", "Ssh-Secret-Pw-4411");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" run runbook.yaml --no-progress --yes -vv")
        .arg(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(workspace.path())
        .env("SSH_TEST_PW", "Ssh-Secret-Pw-4411")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (_, all) = code_and_text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{all}\n--- sshd:\n{}",
        ssh.log()
    );
    // The container is on the engine behind the SSH host, with the key written through
    // the forward.
    let value = docker_cli(&[
        "exec",
        &redis,
        "/usr/bin/redis-cli",
        "-a",
        "Ssh-Secret-Pw-4411",
        "--no-auth-warning",
        "GET",
        "moved",
    ]);
    assert_eq!(value, "through-ssh");
    // The Redis connections went through the SSH host: sshd opened channels to the
    // address as the host sees it.
    let log = ssh.log();
    assert!(
        log.contains(&format!("127.0.0.1 port {port}")) && log.contains("direct-tcpip"),
        "no forwarded channel to port {port} in sshd's log:\n{log}"
    );
    // Docker went through commands on the host (`docker version`, then `docker system
    // dial-stdio` for each API connection).
    assert!(
        log.matches("Starting session: command").count() >= 3,
        "no commands ran on the host:\n{log}"
    );
    // One SSH login for the whole run: Docker and Redis share the connection.
    let logins = log.matches("Accepted publickey").count();
    assert_eq!(logins, 1, "{log}");
    let run_dir = latest_run(&workspace.path().join(".redis-move/over-ssh/runs")).expect("a run");
    for (what, text) in [("output", all.clone()), ("journal", journal_text(&run_dir))] {
        assert!(
            !text.contains("Ssh-Secret-Pw-4411"),
            "the password is in the {what}"
        );
    }
    assert!(
        leftover_ssh_processes(&ssh).is_empty(),
        "ssh processes outlived the run: {:?}",
        leftover_ssh_processes(&ssh)
    );
}

/// One step on the SSH engine, with `target` as its Docker target; the exit code and
/// everything printed.
fn run_one_docker_step(target: &str) -> (Option<i32>, String) {
    let runbook = format!(
        r#"version: 1
name: ssh-failure
targets:
  vps: {target}
phases:
  - id: look
    steps:
      - id: list
        docker.containers: {{ target: vps }}
"#
    );
    let workspace = Workspace::new(&runbook);
    let output = workspace
        .cmd(&["run", "runbook.yaml", "--no-progress", "--yes"])
        .output()
        .unwrap();
    code_and_text(&output)
}

#[tokio::test]
async fn each_ssh_failure_says_what_failed() {
    let Some(_engine) = docker::engine().await else {
        return;
    };
    let Some(ssh) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    let closed = format!(
        "{{ docker: {{ host: \"ssh://{}@127.0.0.1:{}\", ssh: {{ identity: \"{}\", known_hosts: \"{}\" }} }} }}",
        ssh.user,
        free_port(),
        ssh.key.display(),
        ssh.known_hosts.display()
    );
    // A host that accepts the connection and then says nothing: the connect timeout
    // ends the wait.
    let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent_listener.accept() {
            held.push(stream);
        }
    });
    let silent = format!(
        "{{ docker: {{ host: \"ssh://{}@127.0.0.1:{silent_port}\", ssh: {{ identity: \"{}\", known_hosts: \"{}\", connect_timeout: 2s }} }} }}",
        ssh.user,
        ssh.key.display(),
        ssh.known_hosts.display()
    );
    let cases = [
        (
            "changed host key",
            docker_target(&ssh, &ssh.key, &ssh.wrong_known_hosts),
            "SSH host key mismatch",
        ),
        (
            "unknown host key",
            docker_target(&ssh, &ssh.key, &ssh.empty_known_hosts),
            "is not in",
        ),
        (
            "key not authorized",
            docker_target(&ssh, &ssh.unknown_key, &ssh.known_hosts),
            "SSH authentication refused",
        ),
        (
            "no docker on the host",
            docker_target(&ssh, &ssh.key_without_docker, &ssh.known_hosts),
            "no `docker` command on",
        ),
        ("nothing listening", closed, "Connection refused"),
        ("a host that never answers", silent, "timed out"),
        (
            "a key file that is not there",
            docker_target(
                &ssh,
                std::path::Path::new("/nonexistent/id_key"),
                &ssh.known_hosts,
            ),
            "SSH key `/nonexistent/id_key`",
        ),
    ];
    for (case, target, expected) in cases {
        let (code, output) = run_one_docker_step(&target);
        eprintln!("--- {case}:\n{output}");
        assert_eq!(code, Some(1), "{case}: {output}");
        assert!(
            output.contains(expected),
            "{case}: wanted `{expected}` in:\n{output}"
        );
        assert!(!output.contains("panicked"), "{case}: {output}");
    }
    assert!(
        leftover_ssh_processes(&ssh).is_empty(),
        "ssh processes outlived the runs: {:?}",
        leftover_ssh_processes(&ssh)
    );
}

/// Runs a runbook listing volumes named `volume` on Docker target `target`, with extra
/// environment; the exit code and everything printed.
fn list_volume(target: &str, volume: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let runbook = format!(
        r#"version: 1
name: tls-engine
targets:
  engine: {target}
phases:
  - id: look
    steps:
      - id: proof
        docker.volumes: {{ target: engine, name: "^{volume}$" }}
        expect: {{ count: "== 1" }}
"#
    );
    let workspace = Workspace::new(&runbook);
    let output = workspace
        .cmd(&["run", "runbook.yaml", "--no-progress", "--yes"])
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    code_and_text(&output)
}

#[tokio::test]
async fn a_docker_engine_over_tcp_with_mutual_tls() {
    let Some(_engine) = docker::engine().await else {
        return;
    };
    if let Some(why) = redis_move_testbed::engine::unavailable() {
        if std::env::var("REDIS_MOVE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("REDIS_MOVE_REQUIRE_DOCKER=1 but no second engine can run: {why}");
        }
        eprintln!("\n!!!! SKIPPED: this test needs a second dockerd ({why}) !!!!\n");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("rmtest-tls-engine-")
        .tempdir()
        .unwrap();
    let tls = make_mutual_tls(&dir.path().join("certs"));
    let port = free_port();
    let spec = EngineSpec {
        dir: dir.path().join("engine"),
        bridge: format!("rmtls{}", std::process::id() % 100_000),
        bridge_address: "10.213.240.1/24".into(),
        tcp: Some(format!("127.0.0.1:{port}")),
        tls: Some((
            tls.server.join("ca.pem"),
            tls.server.join("cert.pem"),
            tls.server.join("key.pem"),
        )),
    };
    let engine = SecondEngine::start(&spec).expect("a second engine");
    struct Stop(Option<SecondEngine>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(engine) = self.0.take() {
                engine.stop();
            }
        }
    }
    let engine = Stop(Some(engine));
    // Something only this engine has.
    let volume = unique_name("tls-proof");
    engine
        .0
        .as_ref()
        .unwrap()
        .docker(&["volume", "create", &volume])
        .unwrap();
    let host = format!("tcp://127.0.0.1:{port}");
    let with_certs = |party: &std::path::Path| {
        format!(
            "{{ docker: {{ host: \"{host}\", tls: {{ ca: \"{d}/ca.pem\", cert: \"{d}/cert.pem\", key: \"{d}/key.pem\" }} }} }}",
            d = party.display()
        )
    };
    // The target's own certificates.
    let (code, output) = list_volume(&with_certs(&tls.client), &volume, &[]);
    assert_eq!(code, Some(0), "{output}");
    // Docker's environment: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
    let client_dir = tls.client.display().to_string();
    let (code, output) = list_volume(
        &format!("{{ docker: {{ host: \"{host}\" }} }}"),
        &volume,
        &[
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &client_dir),
        ],
    );
    assert_eq!(code, Some(0), "{output}");
    // A Docker context, as the Docker CLI itself stores it.
    let config = dir.path().join("docker-config");
    let config_text = config.display().to_string();
    docker_cli(&[
        "--config",
        &config_text,
        "context",
        "create",
        "tls-vps",
        "--docker",
        &format!(
            "host={host},ca={d}/ca.pem,cert={d}/cert.pem,key={d}/key.pem",
            d = tls.client.display()
        ),
    ]);
    let (code, output) = list_volume(
        "{ docker: { context: tls-vps } }",
        &volume,
        &[("DOCKER_CONFIG", &config_text)],
    );
    assert_eq!(code, Some(0), "{output}");
    // ...and as the CLI's current context, when the target names nothing.
    docker_cli(&["--config", &config_text, "context", "use", "tls-vps"]);
    let (code, output) = list_volume(
        "{ docker: {} }",
        &volume,
        &[("DOCKER_CONFIG", &config_text)],
    );
    assert_eq!(code, Some(0), "{output}");
    // A client certificate of another CA is refused by the engine.
    let (code, output) = list_volume(&with_certs(&tls.stranger), &volume, &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&host) && output.contains("BadCertificate"),
        "{output}"
    );
    // Plain HTTP to the TLS port is refused too.
    let (code, output) = list_volume(
        &format!("{{ docker: {{ host: \"{host}\" }} }}"),
        &volume,
        &[],
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("HTTP request to an HTTPS server"),
        "{output}"
    );
}

/// A user of this machine who may log in over SSH but is not in the `docker` group
/// (created once, when the tests run as root; `None` otherwise).
fn user_without_docker() -> Option<&'static str> {
    const NAME: &str = "rmtest-nodocker";
    let exists = |name: &str| {
        std::process::Command::new("id")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if exists(NAME) {
        return Some(NAME);
    }
    // `*`: no password, and not a locked account (sshd refuses those without PAM).
    let created = std::process::Command::new("useradd")
        .args(["-M", "-d", "/nonexistent", "-s", "/bin/sh", "-p", "*", NAME])
        .output()
        .is_ok_and(|o| o.status.success());
    (created || exists(NAME)).then_some(NAME)
}

#[tokio::test]
async fn a_user_who_may_not_use_the_hosts_docker_socket_is_told_so() {
    let Some(_engine) = docker::engine().await else {
        return;
    };
    let Some(ssh) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    let Some(user) = user_without_docker() else {
        if std::env::var("REDIS_MOVE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!(
                "REDIS_MOVE_REQUIRE_DOCKER=1 but no user without docker could be made (needs root)"
            );
        }
        eprintln!("\n!!!! SKIPPED: this test makes a user without docker, which needs root !!!!\n");
        return;
    };
    let target = format!(
        "{{ docker: {{ host: \"ssh://{user}@127.0.0.1:{}\", ssh: {{ identity: \"{}\", known_hosts: \"{}\" }} }} }}",
        ssh.port,
        ssh.key.display(),
        ssh.known_hosts.display()
    );
    let (code, output) = run_one_docker_step(&target);
    assert_eq!(code, Some(1), "{output}\n--- sshd:\n{}", ssh.log());
    assert!(
        output.contains("permission denied on the Docker socket")
            && output.contains(&format!("for {user}")),
        "{output}"
    );
}

#[tokio::test]
async fn a_key_with_a_passphrase_works_from_the_agent_and_its_passphrase_is_nowhere() {
    use redis_move_testbed::ssh::KEY_PASSPHRASE;
    let Some(_engine) = docker::engine().await else {
        return;
    };
    let Some(ssh) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    // Without an agent, the encrypted key cannot be used (nothing is ever asked).
    let named = docker_target(&ssh, &ssh.encrypted_key, &ssh.known_hosts);
    let runbook_with = |target: &str| {
        format!(
            "version: 1\nname: agent\ntargets:\n  vps: {target}\nphases:\n  - id: look\n    steps:\n      - id: list\n        docker.containers: {{ target: vps }}\n"
        )
    };
    let workspace = Workspace::new(&runbook_with(&named));
    let output = workspace
        .cmd(&["run", "runbook.yaml", "--no-progress", "--yes"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let (_, text) = code_and_text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("authentication refused") && text.contains("agent"),
        "{text}"
    );
    // In an agent (loaded the way an operator does, with the passphrase typed once), it
    // works without naming any key.
    let agent_dir = tempfile::tempdir().unwrap();
    let socket = agent_dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let started = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no agent"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let askpass = agent_dir.path().join("askpass.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{KEY_PASSPHRASE}'\n")).unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&askpass)
        .status()
        .unwrap();
    let added = std::process::Command::new("ssh-add")
        .arg(&ssh.encrypted_key)
        .env("SSH_AUTH_SOCK", &socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let from_agent = format!(
        "{{ docker: {{ host: \"{}\", ssh: {{ known_hosts: \"{}\" }} }} }}",
        ssh.url(),
        ssh.known_hosts.display()
    );
    let workspace = Workspace::new(&runbook_with(&from_agent));
    let output = workspace
        .cmd(&["run", "runbook.yaml", "--no-progress", "--yes", "-vv"])
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let text = format!("{}{text}", code_and_text(&output).1);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let run_dir = latest_run(&workspace.path().join(".redis-move/agent/runs")).expect("a run");
    for (what, text) in [("output", text), ("journal", journal_text(&run_dir))] {
        assert!(
            !text.contains(KEY_PASSPHRASE),
            "the passphrase is in the {what}"
        );
    }
}

#[tokio::test]
async fn a_lost_ssh_connection_is_opened_again_for_the_next_step() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let Some(ssh) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    let image = docker::redis_image(&engine).await.reference;
    let redis = unique_name("ssh-lost-redis");
    let _guard = ContainerGuard::new([redis.clone()]);
    let port = free_port();
    docker_cli(&[
        "run",
        "-d",
        "--name",
        &redis,
        "-p",
        &format!("127.0.0.1:{port}:6379"),
        &image,
        "/usr/bin/redis-server",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]);
    // The master connection is the ssh process with `-M` and this server's key file
    // (`[-]M`: the pattern does not match the shell that runs pkill).
    let kill_master = format!("pkill -f -- '[-]M -T -S .*{}'", ssh.dir().display());
    let runbook = format!(
        r#"version: 1
name: lost-ssh
targets:
  vps: {target}
  vps-redis: {{ redis: {{ url: "redis://127.0.0.1:{port}", via: vps }} }}
phases:
  - id: before
    steps:
      - id: list-before
        docker.containers: {{ target: vps, name: "^{redis}$" }}
        expect: {{ count: "== 1" }}
      - id: ping-before
        redis.ping: {{ target: vps-redis }}
        retry: {{ attempts: 20, interval: 500ms }}
  - id: cut
    steps:
      - id: lose-the-connection
        shell: {{ script: "{kill_master}", read_only: true }}
  - id: after
    steps:
      - id: list-after
        docker.containers: {{ target: vps, name: "^{redis}$" }}
        expect: {{ count: "== 1" }}
      # No retry: the Redis connection made through the lost SSH connection is
      # replaced, not failed once.
      - id: ping-after
        redis.ping: {{ target: vps-redis }}
"#,
        target = docker_target(&ssh, &ssh.key, &ssh.known_hosts),
    );
    let workspace = Workspace::new(&runbook);
    let output = workspace
        .cmd(&["run", "runbook.yaml", "--no-progress", "--yes"])
        .output()
        .unwrap();
    let (_, all) = code_and_text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{all}\n--- sshd:\n{}",
        ssh.log()
    );
    // Two logins: the first connection, and the one that replaced it. A third happens
    // when a session starts in the instant the old master is dying (its socket still
    // there when checked, gone when the client connects): OpenSSH then logs in
    // directly for that one session (seen once in CI on a loaded machine).
    let logins = ssh.log().matches("Accepted publickey").count();
    assert!((2..=3).contains(&logins), "{logins} logins: {}", ssh.log());
    assert!(all.contains("opening it again"), "{all}");
    assert!(leftover_ssh_processes(&ssh).is_empty());
}

#[tokio::test]
async fn a_password_that_breaks_its_url_is_not_shown_in_part() {
    let Some(_engine) = docker::engine().await else {
        return;
    };
    let Some(ssh) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    // `@` and `/` unescaped: a URL parser reads part of the password as the host.
    let runbook = format!(
        r#"version: 1
name: broken-url
secrets:
  pw: {{ env: BROKEN_URL_PW }}
targets:
  vps: {target}
  cache: {{ redis: {{ url: "redis://:${{secrets.pw}}@127.0.0.1:6390", via: vps }} }}
phases:
  - id: p
    steps:
      - id: ping
        redis.ping: {{ target: cache }}
"#,
        target = docker_target(&ssh, &ssh.key, &ssh.known_hosts),
    );
    let workspace = Workspace::new(&runbook).with_env("BROKEN_URL_PW", "abc@TOPSECRET/x");
    let output = workspace
        .cmd(&["run", "runbook.yaml", "--no-progress", "--yes", "-vvv"])
        .output()
        .unwrap();
    let (_, text) = code_and_text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("must be percent-encoded"), "{text}");
    let run_dir = latest_run(&workspace.path().join(".redis-move/broken-url/runs")).expect("a run");
    for (what, text) in [("output", text), ("journal", journal_text(&run_dir))] {
        assert!(
            !text.contains("TOPSECRET"),
            "part of the password is in the {what}"
        );
    }
}

#[tokio::test]
async fn a_host_key_that_changed_while_the_connection_was_down_is_reported_as_such() {
    let Some(_engine) = docker::engine().await else {
        return;
    };
    let Some(first) = SshServer::start(SshServerOptions::default()) else {
        return;
    };
    let port = first.port;
    let handshake = tempfile::tempdir().unwrap();
    let (ready, go) = (handshake.path().join("ready"), handshake.path().join("go"));
    // Between two Docker steps the run waits (without a clock) while the test replaces
    // the host: the same address, another host key (what a man-in-the-middle looks like).
    let runbook = format!(
        r#"version: 1
name: changed-host
targets:
  vps: {target}
phases:
  - id: p
    steps:
      - id: before
        docker.containers: {{ target: vps }}
      - id: meanwhile
        shell:
          read_only: true
          script: |
            touch '{ready}'
            while [ ! -f '{go}' ]; do sleep 0.1; done
      - id: after
        docker.containers: {{ target: vps }}
"#,
        target = docker_target(&first, &first.key, &first.known_hosts),
        ready = ready.display(),
        go = go.display(),
    );
    let workspace = Workspace::new(&runbook);
    let mut child = workspace.spawn(&["run", "runbook.yaml", "--no-progress", "--yes"]);
    let started = std::time::Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before its wait step");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no wait step"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut first = first;
    let first_dir = first.dir().display().to_string();
    first.stop();
    // The old connection is gone with its server; a new server on the same port.
    let _ = std::process::Command::new("pkill")
        .args(["-f", "--", &format!("[-]M -T -S .*{first_dir}")])
        .status();
    let _second = SshServer::start(SshServerOptions {
        port: Some(port),
        ..SshServerOptions::default()
    })
    .expect("sshd");
    std::fs::write(&go, "").unwrap();
    let output = child.wait_with_output().unwrap();
    let (_, text) = code_and_text(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("could not be opened again") && text.contains("SSH host key mismatch"),
        "{text}"
    );
}
