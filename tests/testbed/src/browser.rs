//! A real browser for the tests of the live page: Debian's headless Chromium, driven
//! through the Chrome DevTools Protocol on a websocket (evaluate a script in the page,
//! click, take a screenshot). Without Chromium the tests that need it skip loudly,
//! unless `REDIS_MOVE_REQUIRE_BROWSER=1` (CI), where its absence fails them.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// A headless Chromium with one page.
pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A GET on loopback, without a client library: the body.
fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    // DevTools keeps the connection open: read the headers, then Content-Length bytes.
    let mut reader = std::io::BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

impl Browser {
    /// Starts Chromium (a fresh profile, a `width`×`height` window); `None` (said on
    /// stderr) when there is none and none is required.
    pub fn launch(width: u32, height: u32) -> Option<Browser> {
        let Some(program) = chromium() else {
            assert!(
                std::env::var("REDIS_MOVE_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "REDIS_MOVE_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)"
            );
            eprintln!(
                "\n\n*** SKIPPED: no chromium: the live page's browser test did not run (apt-get install chromium) ***\n"
            );
            return None;
        };
        let profile = tempfile::tempdir().expect("browser profile");
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let stderr = child.stderr.take().expect("chromium's stderr");
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let port: u16 = rest.split('/').next().unwrap_or("").parse().unwrap_or(0);
                    let _ = found.send(port);
                    sent = true;
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium opens its DevTools port");
        // The page target's own websocket.
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let list: Value = get(port, "/json/list")
                .ok()
                .and_then(|body| serde_json::from_str(&body).ok())
                .unwrap_or(Value::Null);
            if let Some(url) = list.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            }) {
                break url;
            }
            assert!(Instant::now() < deadline, "chromium shows no page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(url.as_str()).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        }
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        Some(browser)
    }

    /// Sends a DevTools command and waits for its result (events in between are
    /// dropped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .expect("DevTools command sent");
        loop {
            let message = self.socket.read().expect("DevTools answers");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if value["id"] == json!(id) {
                assert!(
                    value.get("error").is_none(),
                    "DevTools {method}: {}",
                    value["error"]
                );
                return value["result"].clone();
            }
        }
    }

    /// Opens `url` in the page.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// The value of `script` evaluated in the page (promises awaited).
    pub fn eval(&mut self, script: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": script, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "the page threw on `{script}`: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `script` is true in the page (at most `limit`); what it last was.
    pub fn wait_for(&mut self, what: &str, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        // Not there yet (the page still loading) counts as false.
        let guarded =
            format!("(() => {{ try {{ return ({script}); }} catch (e) {{ return false; }} }})()");
        loop {
            if self.eval(&guarded) == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what} (`{script}`)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` into the input `selector` (replacing what it held).
    pub fn fill(&mut self, selector: &str, text: &str) {
        let script = format!(
            "(() => {{ const el = document.querySelector({}); el.value = {}; el.dispatchEvent(new Event('input')); return true; }})()",
            json!(selector),
            json!(text)
        );
        assert_eq!(self.eval(&script), json!(true));
    }

    /// Clicks `selector`.
    pub fn click(&mut self, selector: &str) {
        let script = format!(
            "(() => {{ document.querySelector({}).click(); return true; }})()",
            json!(selector)
        );
        assert_eq!(self.eval(&script), json!(true));
    }

    /// A PNG of what the window shows into `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The live page a `redis-move` process announced on its stderr, and everything that
/// process writes there (read on a thread of its own so that it never blocks).
pub struct Announced {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// The token it printed (none when it was read from a file).
    pub token: Option<String>,
    /// Its stderr so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Announced {
    /// Reads `child`'s stderr until it announces its page (at most 2 minutes).
    pub fn read(child: &mut Child) -> Announced {
        let stderr = child.stderr.take().expect("piped stderr");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (lines, seen) = std::sync::mpsc::channel::<String>();
        let kept = text.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                kept.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut url = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = seen.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no live page announced; stderr:\n{}", text.lock().unwrap())
            });
            if let Some(rest) = line.strip_prefix("live page: ") {
                url = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.split("needs this token: ").nth(1) {
                let token = rest.split_whitespace().next().map(str::to_owned);
                return Announced::new(url.expect("the url comes first"), token, text);
            } else if line.contains("needs the token in") {
                return Announced::new(url.expect("the url comes first"), None, text);
            }
        }
    }

    fn new(
        url: String,
        token: Option<String>,
        stderr: std::sync::Arc<std::sync::Mutex<String>>,
    ) -> Announced {
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the url");
        Announced {
            url,
            port,
            token,
            stderr,
        }
    }

    /// A request to the page's server on loopback: its status and body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        call(self.port, method, path, body)
    }
}

/// A plain-HTTP request to `127.0.0.1:port`: status and body.
pub fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the page");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
