//! The live page (`run --serve`, `redis-move serve`) against real runs of the binary on
//! real redis-server processes: in a real browser (headless Chromium) it follows the run
//! as it moves and decides its gate with the token; over plain HTTP the rules around it
//! (wrong token, missing sign-offs, another process serving it, TLS, loopback only).

use std::time::{Duration, Instant};

use redis_move_testbed::browser::{Announced, Browser};
use redis_move_testbed::tls::make_certs;
use redis_move_testbed::{RedisServer, Workspace};
use serde_json::json;

const PW: &str = "Page-Secret-Pw-77";

/// A counter step, a gate with two sign-offs, then a step that waits for `stop`, with a
/// trigger on `level` (the page's chart).
fn runbook(server: &RedisServer) -> String {
    format!(
        "version: 1\nname: paged\nsecrets:\n  pw: {{ env: PAGE_TEST_PW }}\ntargets:\n  r: {{ redis: {{ url: \"redis://:${{secrets.pw}}@127.0.0.1:{}\" }} }}\nphases:\n  - id: before\n    steps:\n      - {{ id: count, redis.command: {{ args: [INCR, runs] }}, rollback: none }}\n      - {{ id: echo, redis.command: {{ args: [ECHO, \"${{secrets.pw}}\"], read_only: true }} }}\n      - {{ id: pause, redis.command: {{ args: [GET, go-on], read_only: true }}, until: \"== yes\", timeout: 120s }}\n      - {{ id: after-pause, redis.command: {{ args: [INCR, runs] }}, rollback: none }}\n  - id: go\n    gate: {{ question: \"Cut over?\", signoffs: [operator, admin] }}\n  - id: after\n    steps:\n      - {{ id: wait-for-stop, redis.command: {{ args: [GET, stop], read_only: true }}, until: \"== yes\", timeout: 120s }}\ntriggers:\n  - {{ id: level, title: \"Level stays at 5 or below\", during: [before, after], probe: {{ redis.command: {{ args: [GET, level], read_only: true }} }}, every: 200ms, fire: {{ when: \"> 5\" }} }}\n",
        server.port
    )
}

fn workspace(server: &RedisServer) -> Workspace {
    let _ = server.cli(&["SET", "level", "2"]);
    Workspace::new(&runbook(server)).with_env("PAGE_TEST_PW", PW)
}

/// A run (`--wait-at-gates`) waiting at its gate, and `redis-move serve` showing it.
fn waiting_at_the_gate_and_served(
    server: &RedisServer,
    ws: &Workspace,
) -> (std::process::Child, std::process::Child, Announced) {
    let run = ws.spawn(&["run", "runbook.yaml", "--no-progress", "--wait-at-gates"]);
    let _ = server.cli(&["SET", "go-on", "yes"]);
    Workspace::wait_for("the gate", Duration::from_secs(60), || {
        ws.journal()
            .is_some_and(|j| j["steps"]["go"]["status"] == "running")
    });
    let mut serving = ws.spawn(&[
        "serve",
        "--runbook",
        "runbook.yaml",
        "--addr",
        "127.0.0.1:0",
    ]);
    let page = Announced::read(&mut serving);
    (run, serving, page)
}

fn journal_gates(ws: &Workspace) -> serde_json::Value {
    ws.journal().map(|j| j["gates"].clone()).unwrap_or_default()
}

/// The acceptance test of the page in a browser: it shows the run, a step finishing
/// shows within a second, a wrong token is refused (the run keeps waiting), the right
/// one with both sign-offs continues the run, and who decided is recorded.
#[test]
fn the_page_follows_the_run_in_a_browser_and_decides_its_gate_with_the_token() {
    let Some(mut browser) = Browser::launch(1100, 1400) else {
        return;
    };
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = workspace(&server);
    let mut child = ws.spawn(&[
        "run",
        "runbook.yaml",
        "--no-progress",
        "--serve",
        "127.0.0.1:0",
    ]);
    let page = Announced::read(&mut child);
    let token = page.token.clone().expect("a token printed");
    browser.open(&page.url);
    browser.wait_for(
        "the run's steps",
        "window.redisMove && document.querySelectorAll('tr[data-step]').length === 6",
        Duration::from_secs(30),
    );
    browser.wait_for(
        "`pause` running",
        "document.querySelector('tr[data-step=\"pause\"]').dataset.status === 'running'",
        Duration::from_secs(30),
    );
    // Steps finish while the page is open: each shows within a second.
    let _ = server.cli(&["SET", "go-on", "yes"]);
    browser.wait_for(
        "the gate",
        "!!(window.redisMove.state.gate && !document.getElementById('gate').hidden)",
        Duration::from_secs(60),
    );
    let journal = ws.journal().expect("journal");
    for step in ["pause", "after-pause"] {
        let finished = journal["steps"][step]["finished_at"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("`{step}` finished: {journal}"));
        let seen = browser.eval(&format!("window.redisMove.finishedSeen[{}]", json!(step)));
        let seen = seen
            .as_i64()
            .unwrap_or_else(|| panic!("`{step}` seen: {seen}"));
        let late = seen - finished.as_millisecond();
        eprintln!("`{step}` finished, and the page showed it {late} ms later");
        assert!(late < 1000, "`{step}` showed {late} ms after it finished");
    }
    assert_eq!(
        browser.eval("window.redisMove.state.gate.roles"),
        json!(["operator", "admin"])
    );
    assert!(
        browser
            .eval("document.getElementById('gate-question').textContent")
            .as_str()
            .is_some_and(|q| q == "Cut over?")
    );
    // A wrong token: refused, nothing recorded, the run still waits.
    browser.fill("#who", "Ana Operator");
    browser.fill("#token", "not-the-token-at-all");
    browser.click("button.sign[data-role=\"operator\"]");
    browser.wait_for(
        "the refusal",
        "document.getElementById('answer').className === 'refused' && document.getElementById('answer').textContent.includes('wrong token')",
        Duration::from_secs(30),
    );
    browser.click("#go");
    browser.wait_for(
        "the refusal of go",
        "document.getElementById('answer').className === 'refused'",
        Duration::from_secs(30),
    );
    assert_eq!(journal_gates(&ws), json!([]));
    assert!(child.try_wait().unwrap().is_none(), "the run still waits");
    // The right token: two sign-offs by two people, then go.
    browser.fill("#token", &token);
    browser.click("button.sign[data-role=\"operator\"]");
    browser.wait_for(
        "the operator's sign-off",
        "window.redisMove.state.gate.signed.length === 1",
        Duration::from_secs(30),
    );
    browser.fill("#who", "Bo Admin");
    browser.click("button.sign[data-role=\"admin\"]");
    browser.wait_for(
        "the admin's sign-off",
        "window.redisMove.state.gate.signed.length === 2",
        Duration::from_secs(30),
    );
    let _ = server.cli(&["SET", "level", "3"]);
    if let Some(dir) = std::env::var_os("REDIS_MOVE_SCREENSHOTS") {
        browser.screenshot(&std::path::Path::new(&dir).join("live-page.png"));
    }
    browser.fill("#who", "Ana Operator");
    browser.click("#go");
    browser.wait_for(
        "the run going on",
        "document.querySelector('tr[data-step=\"wait-for-stop\"]').dataset.status === 'running'",
        Duration::from_secs(60),
    );
    let gates = journal_gates(&ws);
    assert_eq!(gates[0]["gate"], "go", "{gates}");
    assert_eq!(gates[0]["decision"], "go");
    assert_eq!(gates[0]["who"], "Ana Operator");
    assert_eq!(gates[0]["how"], "live page from 127.0.0.1");
    assert_eq!(gates[0]["signoffs"][0]["who"], "Ana Operator");
    assert_eq!(gates[0]["signoffs"][1]["role"], "admin");
    assert_eq!(gates[0]["signoffs"][1]["who"], "Bo Admin");
    let _ = server.cli(&["SET", "stop", "yes"]);
    browser.wait_for(
        "the run's end",
        "window.redisMove.state.status === 'succeeded'",
        Duration::from_secs(60),
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", page.stderr.lock().unwrap());
    // Nothing the page served held the password.
    let events = std::fs::read_to_string(ws.run_dir().unwrap().join("events.jsonl")).unwrap();
    assert!(!events.contains(PW));
    assert!(!page.stderr.lock().unwrap().contains(PW));
}

/// `redis-move serve` shows a run another process runs, from its state directory; the
/// gate is decided there (HTTP, as the page's script does) and the run goes on.
#[test]
fn serve_shows_the_run_of_another_process_and_decides_its_gate() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = workspace(&server);
    let (mut run, mut serving, page) = waiting_at_the_gate_and_served(&server, &ws);
    let token = page.token.clone().expect("a token printed");
    let state = || -> serde_json::Value {
        serde_json::from_str(&page.call("GET", "/state", None).1).expect("state JSON")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state()["gate"]["id"] != "go" {
        assert!(
            Instant::now() < deadline,
            "the gate never showed: {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let decide = |name: &str, token: &str| {
        page.call(
            "POST",
            "/api/decide",
            Some(&json!({ "gate": "go", "decision": "go", "name": name, "token": token })),
        )
    };
    // A body that is not the API's JSON: refused in the API's own shape.
    let (status, body) = page.call("POST", "/api/decide", Some(&json!({ "gate": 7 })));
    assert_eq!(status, 422, "{body}");
    let refused: serde_json::Value = serde_json::from_str(&body).expect("a JSON refusal");
    assert!(refused["error"].is_string(), "{body}");
    let (status, body) = decide("Ana", "wrong-token-000000");
    assert_eq!(
        (status, body.contains("wrong token")),
        (403, true),
        "{body}"
    );
    let (status, body) = decide("Ana", &token);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("sign-offs missing before go: operator, admin"),
        "{body}"
    );
    let (status, body) = decide("", &token);
    assert_eq!(status, 400, "{body}");
    for (role, who) in [("operator", "Ana"), ("admin", "Bo")] {
        let (status, body) = page.call(
            "POST",
            "/api/signoff",
            Some(&json!({ "gate": "go", "role": role, "name": who, "token": token })),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = page.call(
        "POST",
        "/api/signoff",
        Some(&json!({ "gate": "go", "role": "admin", "name": "Eve", "token": token })),
    );
    assert_eq!(status, 409, "a role is signed once: {body}");
    let (status, body) = decide("Ana", &token);
    assert_eq!(status, 200, "{body}");
    Workspace::wait_for("the gate decided", Duration::from_secs(30), || {
        journal_gates(&ws)[0]["who"] == "Ana"
    });
    let (status, body) = decide("Ana", &token);
    assert_eq!(status, 409, "decided once: {body}");
    let gates = journal_gates(&ws);
    assert_eq!(gates[0]["how"], "live page from 127.0.0.1");
    assert_eq!(gates[0]["signoffs"][1]["who"], "Bo");
    // The step that echoes the password shows it masked, as everywhere else.
    let shown = page.call("GET", "/state", None).1;
    assert!(shown.contains(r#"data-step=\"echo\""#), "{shown}");
    assert!(
        !shown.contains(PW),
        "the password reached the page: {shown}"
    );
    let _ = server.cli(&["SET", "stop", "yes"]);
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // A request for another host name is refused (DNS rebinding).
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", page.port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /state HTTP/1.1\r\nHost: attacker.example:80\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let _ = serving.kill();
    let _ = serving.wait();
}

/// A non-loopback address is refused before anything runs, unless over TLS; over TLS
/// the page is served as HTTPS with the given certificate.
#[tokio::test]
async fn the_page_binds_to_loopback_unless_given_tls() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = workspace(&server);
    let refused = ws
        .cmd(&[
            "run",
            "runbook.yaml",
            "--no-progress",
            "--serve",
            "0.0.0.0:0",
        ])
        .assert()
        .code(2);
    let text = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(text.contains("is not a loopback address"), "{text}");
    assert!(text.contains("nothing was done"), "{text}");
    assert_eq!(server.cli(&["GET", "runs"]).trim(), "", "no step ran");
    // Over TLS: HTTPS with the certificate, on any address.
    let certs = make_certs(ws.path());
    let mut child = ws.spawn(&[
        "run",
        "runbook.yaml",
        "--no-progress",
        "--serve",
        "0.0.0.0:0",
        "--page-tls-cert",
        certs.cert.to_str().unwrap(),
        "--page-tls-key",
        certs.key.to_str().unwrap(),
    ]);
    let page = Announced::read(&mut child);
    assert!(page.url.starts_with("https://"), "{}", page.url);
    // Clients that connect and never say a word hold nobody else back: each TLS
    // handshake has a task of its own (one at a time, these three would cost 30 s).
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", page.port)).unwrap())
        .collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let state: serde_json::Value = client
        .get(format!("https://localhost:{}/state", page.port))
        .send()
        .await
        .expect("HTTPS answers")
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], "running", "{state}");
    drop(idle);
    let _ = server.cli(&["SET", "go-on", "yes"]);
    let _ = server.cli(&["SET", "stop", "yes"]);
    let _ = child.kill();
    let _ = child.wait();
}

/// A long step reports how far along it is in its own measure: a wait in seconds (the
/// terminal draws a bar from it, the page a `<progress>`), in the JSON log and in the
/// run's event log.
#[test]
fn a_wait_reports_its_progress_in_seconds() {
    let ws = Workspace::new(
        "version: 1\nname: waiting\nphases:\n  - id: main\n    steps:\n      - { id: pause, wait: { duration: 3s } }\n",
    );
    let output = ws
        .cmd(&["run", "runbook.yaml", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let measures: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "step_progress" && e["step"] == "pause")
        .map(|e| e["measure"].clone())
        .collect();
    assert!(measures.len() >= 2, "a tick a second: {measures:?}");
    for m in &measures {
        assert_eq!(m["unit"], "seconds", "{m}");
        assert_eq!(m["total"], 3.0, "{m}");
        let done = m["done"].as_f64().unwrap();
        assert!((0.0..=3.0).contains(&done), "{m}");
    }
    let first = measures[0]["done"].as_f64().unwrap();
    let last = measures.last().unwrap()["done"].as_f64().unwrap();
    assert!(last > first, "the bar moves: {measures:?}");
    let events = std::fs::read_to_string(ws.run_dir().unwrap().join("events.jsonl")).unwrap();
    assert!(events.contains(r#""unit":"seconds""#), "{events}");
}

/// A run that stopped at its gate (no terminal, exit 4) is decided on the page that
/// `redis-move serve` shows: the first decision stands (a later one is refused, not
/// silently put in its place), and `resume` goes on with it.
#[test]
fn a_run_stopped_at_its_gate_is_decided_on_the_page_and_resume_goes_on() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = workspace(&server);
    let _ = server.cli(&["SET", "go-on", "yes"]);
    ws.cmd(&["run", "runbook.yaml", "--no-progress", "--no-input"])
        .assert()
        .code(4);
    let mut serving = ws.spawn(&[
        "serve",
        "--runbook",
        "runbook.yaml",
        "--addr",
        "127.0.0.1:0",
    ]);
    let page = Announced::read(&mut serving);
    let token = page.token.clone().expect("a token printed");
    let state: serde_json::Value =
        serde_json::from_str(&page.call("GET", "/state", None).1).unwrap();
    assert_eq!(state["gate"]["id"], "go", "{state}");
    assert_eq!(state["gate"]["stopped"], true, "{state}");
    for (role, who) in [("operator", "Ana"), ("admin", "Bo")] {
        let body = json!({ "gate": "go", "role": role, "name": who, "token": token });
        assert_eq!(page.call("POST", "/api/signoff", Some(&body)).0, 200);
    }
    let decide = |decision: &str, name: &str| {
        let body = json!({ "gate": "go", "decision": decision, "name": name, "token": token });
        page.call("POST", "/api/decide", Some(&body))
    };
    // Invisible names are no names.
    assert_eq!(decide("go", "\u{200b}").0, 400);
    let (status, body) = decide("go", "Ana");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("`redis-move resume` uses it"), "{body}");
    let (status, body) = decide("no-go", "Mallory");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("decided already: go by Ana"), "{body}");
    let _ = serving.kill();
    let _ = serving.wait();
    let _ = server.cli(&["SET", "stop", "yes"]);
    ws.cmd(&["resume", "--no-progress", "--no-input"])
        .assert()
        .success();
    let gates = journal_gates(&ws);
    assert_eq!(gates[0]["who"], "Ana", "{gates}");
    assert_eq!(gates[0]["decision"], "go");
    assert_eq!(gates[0]["signoffs"][1]["who"], "Bo");
    // Used once: the gate asked again (another run) asks anew.
    let approvals = ws.run_dir().unwrap().join("approvals");
    assert!(!approvals.join("go.json").exists());
}

/// A run whose process was killed is not shown as running: `redis-move serve` sees that
/// nobody holds the run's lock, and says so; a decision there is for `resume`.
#[test]
fn a_killed_run_is_shown_as_interrupted() {
    let server = RedisServer::start_with(Some(PW), &[]);
    let ws = workspace(&server);
    let (mut run, mut serving, page) = waiting_at_the_gate_and_served(&server, &ws);
    let state = || -> serde_json::Value {
        serde_json::from_str(&page.call("GET", "/state", None).1).expect("state JSON")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state()["gate"]["id"] != "go" {
        assert!(Instant::now() < deadline, "{}", state());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state()["status"], "running");
    assert_eq!(state()["gate"]["stopped"], false);
    run.kill().unwrap();
    run.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while state()["status"] != "interrupted" {
        assert!(Instant::now() < deadline, "{}", state());
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = state();
    assert_eq!(shown["gate"]["stopped"], true, "{shown}");
    assert!(
        shown["header"]
            .as_str()
            .unwrap()
            .contains("the process running it is gone"),
        "{shown}"
    );
    let _ = serving.kill();
    let _ = serving.wait();
}
