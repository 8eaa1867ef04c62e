//! The live page's server (`run --serve ADDR`, `redis-move serve RUN`): the page and its
//! script (embedded), its state pushed as server-sent events whenever the run moves
//! (and at most every 250 ms otherwise), and two ways to act: a gate decision and a
//! named sign-off, each needing the run's token and the name of who gives it. They are
//! written as approval files (the format `redis-move approve` writes), which the process
//! running the run reads: the page may be served by that process or by another.
//!
//! It binds to loopback unless told otherwise, and refuses any other address without
//! TLS (`--page-tls-cert`/`--page-tls-key`) or `--page-insecure`. Served on loopback,
//! it answers only requests whose Host is a loopback name (DNS rebinding).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::exec::engine::JournalHandle;
use crate::exec::journal::{self, GateDecision, RunStatus, Signoff};
use crate::exec::operator::{
    ApprovalFile, pending_approval, read_signoffs, write_approval, write_signoff,
};
use crate::exec::state::StateDir;
use crate::report::page::{self, WaitingGate};
use crate::report::{Report, events};
use crate::runbook::Runbook;

/// How the page is served (the `--page-*` options).
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Where: `127.0.0.1:8077`, `[::1]:8077`, `localhost:8077`, `:8077` or `8077`
    /// (loopback), or another address (with TLS or `insecure`).
    pub addr: String,
    /// PEM certificate chain: serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key: Option<PathBuf>,
    /// Accept a non-loopback address over plain HTTP.
    pub insecure: bool,
    /// Read the token from this file instead of making one.
    pub token_file: Option<PathBuf>,
}

/// Why the page cannot be served; the run has not started then.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address does not parse or resolve.
    #[error("`{0}` is not an address to serve the page at (HOST:PORT, or a port for 127.0.0.1)")]
    Address(String),
    /// A non-loopback address without TLS or `--page-insecure`.
    #[error(
        "`{0}` is not a loopback address: the page (and its token) would cross the network in plain HTTP; give --page-tls-cert and --page-tls-key, or --page-insecure to accept that"
    )]
    NotLoopback(String),
    /// The certificate or key cannot be used.
    #[error("the page's TLS certificate or key: {0}")]
    Tls(String),
    /// Binding failed.
    #[error("cannot serve the page at {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The token file cannot be read or written, or is too short.
    #[error("the page's token: {0}")]
    Token(String),
}

/// Where the journal of the run shown is read.
pub enum Journaled {
    /// In this process.
    Live(Arc<JournalHandle>),
    /// In the state directory (another process runs it, or it ended).
    File(PathBuf),
}

/// A page being served.
pub struct LivePage {
    /// Its address, `http://` or `https://`.
    pub url: String,
    /// The token approvals need.
    pub token: String,
    /// The file the token is kept in.
    pub token_file: PathBuf,
    /// Whether the token was read from a file the operator gave.
    pub token_given: bool,
    /// Served in plain HTTP on a network address (`--page-insecure`).
    pub plain_to_network: bool,
    poke: Arc<Notify>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LivePage {
    /// Something happened: push the state now.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// A handle that pokes the page.
    pub fn poker(&self) -> Arc<Notify> {
        self.poke.clone()
    }

    /// Pushes the last state, gives the browsers a moment to get it, and stops.
    pub async fn finish(self) {
        self.poke();
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }

    /// Serves until Ctrl-C.
    pub async fn until_interrupted(self) {
        let _ = tokio::signal::ctrl_c().await;
        self.finish().await;
    }
}

/// The page's shared state.
struct Page {
    journal: Journaled,
    runbook: Arc<Runbook>,
    events: PathBuf,
    approvals: PathBuf,
    token: String,
    poke: Arc<Notify>,
    /// The latest state, as pushed.
    latest: watch::Receiver<Arc<String>>,
    /// Host names the page answers to (loopback only); none: any.
    hosts: Option<Vec<String>>,
    /// The gate and run events of the log, read as it grows.
    gates: std::sync::Mutex<events::GateEvents>,
    /// The state directory's lock (whether a process runs the run).
    lock: PathBuf,
}

/// What the page shows now, and the gate the run waits at.
fn snapshot(page: &Page) -> (serde_json::Value, Option<WaitingGate>) {
    let report = match &page.journal {
        Journaled::Live(handle) => handle.read(|j| Report::build(j, &page.runbook)),
        Journaled::File(path) => match journal::read(path) {
            Ok(j) => {
                let mut report = Report::build(&j, &page.runbook);
                if matches!(report.status, RunStatus::Running | RunStatus::RollingBack)
                    && !held(&page.lock)
                {
                    // Its journal says running, but no process holds the run's lock:
                    // it was killed. What it waited for is decided for `resume`.
                    report.status = RunStatus::Interrupted;
                    report.reason = "the process running it is gone (killed?); `redis-move resume` continues it".into();
                }
                report
            }
            Err(e) => return (json!({ "error": e.to_string() }), None),
        },
    };
    let events = events::tail(&page.events, 400);
    let gate_events = page
        .gates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .update(&page.events)
        .to_vec();
    let gate = page::waiting_gate(&report, &gate_events).map(|mut g| {
        g.signed = read_signoffs(&page.approvals, &g.id)
            .into_iter()
            .filter(|s| g.roles.contains(&s.role))
            .collect();
        g
    });
    (page::state(&report, &events, gate.as_ref()), gate)
}

/// Whether a live process holds the state directory's lock. Read without trying the
/// lock (a `resume` starting at that instant must find it free): the holder it names,
/// on this host, is alive. A holder on another host, or where liveness cannot be
/// told, counts as alive.
fn held(lock: &Path) -> bool {
    let Some(holder) = std::fs::read_to_string(lock)
        .ok()
        .and_then(|text| serde_json::from_str::<crate::exec::state::LockHolder>(&text).ok())
    else {
        return false;
    };
    if holder.host != journal::hostname() || !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{}", holder.pid)).exists()
}

/// Parses `--serve`/`--addr`: a port alone, or `:PORT`, means 127.0.0.1.
pub fn parse_addr(text: &str) -> Result<SocketAddr, ServeError> {
    let text = text.trim();
    let bad = || ServeError::Address(text.to_owned());
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(bad)
}

/// A random token: 128 bits, hex.
fn new_token() -> Result<String, ServeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ServeError::Token(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The run's token: the one given (`--page-token-file`), else the run's own
/// (`serve.token` in its directory, made at first need, readable by its owner only).
fn token(options: &ServeOptions, run_dir: &Path) -> Result<(String, PathBuf, bool), ServeError> {
    if let Some(file) = &options.token_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ServeError::Token(format!("cannot read `{}`: {e}", file.display())))?;
        let token = text.trim().to_owned();
        if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
            return Err(ServeError::Token(format!(
                "`{}` must hold one token of at least 16 characters",
                file.display()
            )));
        }
        return Ok((token, file.clone(), true));
    }
    let path = run_dir.join("serve.token");
    if let Ok(text) = std::fs::read_to_string(&path)
        && text.trim().len() >= 32
    {
        return Ok((text.trim().to_owned(), path, false));
    }
    let token = new_token()?;
    std::fs::create_dir_all(run_dir).map_err(|e| ServeError::Token(e.to_string()))?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open
        .open(&path)
        .map_err(|e| ServeError::Token(format!("cannot write `{}`: {e}", path.display())))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
        .map_err(|e| ServeError::Token(e.to_string()))?;
    Ok((token, path, false))
}

/// Compares without stopping at the first difference.
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

/// Starts serving the page of run `run_id` (its state directory `state`).
pub async fn start(
    options: &ServeOptions,
    journal: Journaled,
    runbook: Arc<Runbook>,
    state: &StateDir,
    run_id: &str,
) -> Result<LivePage, ServeError> {
    let addr = parse_addr(&options.addr)?;
    let tls = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => {
            return Err(ServeError::Tls(
                "give both --page-tls-cert and --page-tls-key".into(),
            ));
        }
    };
    if !addr.ip().is_loopback() && tls.is_none() && !options.insecure {
        return Err(ServeError::NotLoopback(options.addr.clone()));
    }
    let run_dir = state.run_dir(run_id);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Only once the page can be served: a refused start leaves nothing behind.
    let (token, token_file, token_given) = token(options, &run_dir)?;
    let hosts = addr.ip().is_loopback().then(|| {
        let port = bound.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        if let IpAddr::V4(ip) = bound.ip() {
            hosts.push(format!("{ip}:{port}"));
        }
        // Browsers leave the scheme's own port out of Host.
        if port == if tls.is_some() { 443 } else { 80 } {
            let bare: Vec<String> = hosts
                .iter()
                .filter_map(|h| h.rsplit_once(':').map(|(name, _)| name.to_owned()))
                .collect();
            hosts.extend(bare);
        }
        hosts
    });
    let poke = Arc::new(Notify::new());
    let (publish, latest) = watch::channel(Arc::new(String::new()));
    let page = Arc::new(Page {
        journal,
        runbook,
        events: run_dir.join("events.jsonl"),
        approvals: state.approvals(run_id),
        token: token.clone(),
        poke: poke.clone(),
        latest,
        hosts,
        gates: Default::default(),
        lock: state.lock_path(),
    });
    let stop = CancellationToken::new();
    let first = Arc::new(snapshot(&page).0.to_string());
    let _ = publish.send(first);
    let renderer = tokio::spawn(render(page.clone(), publish, stop.clone()));
    let app = router(page);
    let shutdown = stop.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener =
        PageListener::new(listener, tls).map_err(|source| ServeError::Bind { addr, source })?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    let shown = if bound.ip().is_unspecified() {
        format!("<this host>:{}", bound.port())
    } else {
        bound.to_string()
    };
    Ok(LivePage {
        url: format!("{scheme}://{shown}/"),
        token,
        token_file,
        token_given,
        plain_to_network: !bound.ip().is_loopback() && scheme == "http",
        poke,
        stop,
        tasks: vec![renderer, server],
    })
}

/// Publishes the state whenever it changes: at once when poked, else every 250 ms.
async fn render(page: Arc<Page>, publish: watch::Sender<Arc<String>>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = page.poke.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => {}
        }
        let reader = page.clone();
        let Ok((state, _)) = tokio::task::spawn_blocking(move || snapshot(&reader)).await else {
            continue;
        };
        let state = state.to_string();
        publish.send_if_modified(|current| {
            if **current == state {
                return false;
            }
            *current = Arc::new(state);
            true
        });
        if stop.is_cancelled() {
            // Browsers get the last state before the streams close.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    }
}

fn router(page: Arc<Page>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/page.js", get(script))
        .route("/state", get(current))
        .route("/events", get(stream))
        .route("/api/decide", post(decide))
        .route("/api/signoff", post(signoff))
        .layer(axum::middleware::from_fn_with_state(page.clone(), guard))
        .with_state(page)
}

/// Refuses requests for another host name (loopback pages), and adds the headers
/// every answer carries: no caching, no framing, nothing but this origin.
async fn guard(
    State(page): State<Arc<Page>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = match &page.hosts {
        Some(hosts)
            if !hosts.iter().any(|h| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| h.eq_ignore_ascii_case(v))
            }) =>
        {
            refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "this page answers to a loopback address only",
            )
        }
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::SHELL,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        page::SCRIPT,
    )
        .into_response()
}

async fn current(State(page): State<Arc<Page>>) -> Response {
    let latest = page.latest.borrow().clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        latest.as_str().to_owned(),
    )
        .into_response()
}

async fn stream(
    State(page): State<Arc<Page>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut latest = page.latest.clone();
    latest.mark_changed();
    let updates = futures_util::stream::unfold(latest, |mut latest| async move {
        latest.changed().await.ok()?;
        let state = latest.borrow_and_update().clone();
        Some((Ok(Event::default().data(state.as_str())), latest))
    });
    Sse::new(updates).keep_alive(KeepAlive::default())
}

/// A decision from the page.
#[derive(Deserialize)]
struct DecideBody {
    gate: String,
    decision: GateDecision,
    name: String,
    token: String,
}

/// A named sign-off from the page.
#[derive(Deserialize)]
struct SignoffBody {
    gate: String,
    role: String,
    name: String,
    token: String,
}

/// What a request that acts names: the gate, who, and the token.
trait Acting {
    fn credentials(&self) -> (&str, &str, &str);
}

impl Acting for DecideBody {
    fn credentials(&self) -> (&str, &str, &str) {
        (&self.gate, &self.name, &self.token)
    }
}

impl Acting for SignoffBody {
    fn credentials(&self) -> (&str, &str, &str) {
        (&self.gate, &self.name, &self.token)
    }
}

/// Reads the request's body, checks its token and name, and finds the gate the run
/// waits at, which must be the one it names: the body, who, and the gate.
async fn admit<B: Acting>(
    page: &Arc<Page>,
    peer: SocketAddr,
    body: Result<Json<B>, JsonRejection>,
) -> Result<(B, String, WaitingGate), Response> {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejected) => return Err(refuse(rejected.status(), &rejected.body_text())),
    };
    let (who, gate) = check(page, peer, body.credentials()).await?;
    Ok((body, who, gate))
}

/// Checks the token and the name, and finds the gate the run waits at: it must be
/// `gate`.
async fn check(
    page: &Arc<Page>,
    peer: SocketAddr,
    (gate, name, token): (&str, &str, &str),
) -> Result<(String, WaitingGate), Response> {
    if !same_token(token.trim(), &page.token) {
        tracing::warn!(peer = %peer.ip(), "live page: a wrong token was refused");
        // Guessing is slow.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return Err(refuse(StatusCode::FORBIDDEN, "wrong token"));
    }
    let name = name.trim();
    // Invisible or reordering characters would make a decision anonymous or misread.
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    if !name.chars().any(char::is_alphanumeric)
        || name.chars().count() > 100
        || name.chars().any(hidden)
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "give your name (at most 100 characters): it is recorded with the decision",
        ));
    }
    let reader = page.clone();
    let waiting = tokio::task::spawn_blocking(move || snapshot(&reader).1)
        .await
        .ok()
        .flatten();
    match waiting {
        Some(w) if w.id == gate => Ok((name.to_owned(), w)),
        Some(w) => Err(refuse(
            StatusCode::CONFLICT,
            &format!("the run waits at `{}`, not at `{gate}`", w.id),
        )),
        None => Err(refuse(
            StatusCode::CONFLICT,
            &format!("`{gate}` is not waiting for a decision (decided already, or not reached)"),
        )),
    }
}

async fn decide(
    State(page): State<Arc<Page>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    body: Result<Json<DecideBody>, JsonRejection>,
) -> Response {
    let (body, who, gate) = match admit(&page, peer, body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let missing = gate.unsigned();
    if body.decision == GateDecision::Go && !missing.is_empty() {
        return refuse(
            StatusCode::CONFLICT,
            &format!("sign-offs missing before go: {}", missing.join(", ")),
        );
    }
    let approval = ApprovalFile {
        decision: body.decision,
        who: who.clone(),
        at: jiff::Timestamp::now(),
        how: Some(format!("live page from {}", peer.ip())),
        signoffs: gate.signed.clone(),
    };
    match write_approval(&page.approvals, &gate.id, &approval) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let first = pending_approval(&page.approvals, &gate.id)
                .map(|p| format!("{} by {}", decision_word(p.decision, gate.manual), p.who))
                .unwrap_or_else(|| "by someone else".into());
            return refuse(
                StatusCode::CONFLICT,
                &format!("`{}` was decided already: {first}", gate.id),
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the decision could not be recorded: {e}"),
            );
        }
    }
    page.poke.notify_one();
    let word = decision_word(body.decision, gate.manual);
    let then = if gate.stopped {
        " The run is stopped: `redis-move resume` uses it."
    } else {
        ""
    };
    (
        StatusCode::OK,
        Json(json!({ "message": format!("`{}`: {word}, recorded as {who}.{then}", gate.id) })),
    )
        .into_response()
}

fn decision_word(decision: GateDecision, manual: bool) -> &'static str {
    match (decision, manual) {
        (GateDecision::Go, false) => "go",
        (GateDecision::Go, true) => "done",
        (GateDecision::NoGo, false) => "no-go",
        (GateDecision::NoGo, true) => "abort",
    }
}

async fn signoff(
    State(page): State<Arc<Page>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    body: Result<Json<SignoffBody>, JsonRejection>,
) -> Response {
    let (body, who, gate) = match admit(&page, peer, body).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Some(index) = gate.roles.iter().position(|r| *r == body.role) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("`{}` asks for no sign-off `{}`", gate.id, body.role),
        );
    };
    if let Some(given) = gate.signed.iter().find(|s| s.role == body.role) {
        return refuse(
            StatusCode::CONFLICT,
            &format!("`{}` was signed off already, by {}", body.role, given.who),
        );
    }
    let signed = Signoff {
        role: body.role.clone(),
        who: who.clone(),
        at: jiff::Timestamp::now(),
    };
    if let Err(e) = write_signoff(&page.approvals, &gate.id, index, &signed) {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the sign-off could not be recorded: {e}"),
        );
    }
    page.poke.notify_one();
    (
        StatusCode::OK,
        Json(json!({ "message": format!("sign-off `{}` by {who} recorded", body.role) })),
    )
        .into_response()
}

/// The address a request came from.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PageListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PageListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// At most this many connections at once: the page's readers cannot take the file
/// descriptors the run needs.
const MAX_CONNECTIONS: usize = 64;

/// A connection of the page: plain or TLS, holding one of the [`MAX_CONNECTIONS`]
/// places until it closes.
struct Connection {
    stream: Stream,
    _place: tokio::sync::OwnedSemaphorePermit,
}

enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The page's listener: accepts on its own task, at most [`MAX_CONNECTIONS`] at once,
/// each TLS handshake on a task of its own (a client that never finishes one holds
/// nobody else back, and is dropped after 10 s).
struct PageListener {
    ready: tokio::sync::mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl PageListener {
    fn new(
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<PageListener> {
        let local = listener.local_addr()?;
        let (sender, ready) = tokio::sync::mpsc::channel(8);
        let places = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match &tls {
                    None => {
                        let connection = Connection {
                            stream: Stream::Plain(tcp),
                            _place: place,
                        };
                        if sender.send((connection, peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let (acceptor, sender) = (acceptor.clone(), sender.clone());
                        tokio::spawn(async move {
                            let handshake = acceptor.accept(tcp);
                            if let Ok(Ok(tls)) =
                                tokio::time::timeout(Duration::from_secs(10), handshake).await
                            {
                                let connection = Connection {
                                    stream: Stream::Tls(Box::new(tls)),
                                    _place: place,
                                };
                                let _ = sender.send((connection, peer)).await;
                            }
                        });
                    }
                }
            }
        });
        Ok(PageListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for PageListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for PageListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task ended (never, short of a runtime shutdown).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ServeError::Tls(format!("`{}`: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "`{}` holds no certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Tls(format!("`{}`: {e}", key.display())))?;
    crate::backend::install_crypto_provider();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("8077").unwrap().to_string(), "127.0.0.1:8077");
        assert_eq!(parse_addr(":8077").unwrap().to_string(), "127.0.0.1:8077");
        assert_eq!(
            parse_addr("localhost:9").unwrap().to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(parse_addr("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(!parse_addr("0.0.0.0:9").unwrap().ip().is_loopback());
        assert!(parse_addr("nonsense").is_err());
        assert!(parse_addr("host:99999").is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("abcd", "abc"));
        assert!(!same_token("", "abc"));
        let token = new_token().unwrap();
        assert_eq!(token.len(), 32);
        assert_ne!(token, new_token().unwrap());
    }
}
