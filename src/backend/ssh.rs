//! Hosts reached over SSH: one multiplexed connection per host (the system `ssh` as a
//! control master, so `~/.ssh/config`, ProxyJump and the agent work as they do for the
//! operator), shared by that host's Docker Engine (`docker system dial-stdio` behind a
//! private local socket) and by the Redis servers reached through it (`ssh -W` behind a
//! loopback port). Host keys are always checked; nothing is ever asked on a terminal.
//!
//! Why not bollard's own `ssh` feature: it launches a new SSH master for every HTTP
//! connection it opens, with no say over host-key checking or the connect timeout, and
//! reports every failure as one opaque error; an operator needs to know whether the host
//! key, the key or the remote `docker` was the problem.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::BackendError;

/// Default time limit of opening the SSH connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How many lines of the master's error output are kept for messages.
const KEPT_LINES: usize = 20;

/// Where and how to reach one SSH host, every value resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SshDestination {
    /// Login user (default: ssh's own, from `~/.ssh/config` or the local user).
    pub user: Option<String>,
    /// Host name or address (an alias of `~/.ssh/config` works).
    pub host: String,
    /// Port (default: ssh's own).
    pub port: Option<u16>,
    /// Private key to offer (default: the agent's and ssh's default keys).
    pub identity: Option<PathBuf>,
    /// known_hosts file to check the host key against (default: ssh's own).
    pub known_hosts: Option<PathBuf>,
    /// Time limit of opening the connection.
    pub connect_timeout: Duration,
}

impl SshDestination {
    /// Parses `ssh://[user@]host[:port]`; the other settings are ssh's defaults.
    pub fn parse(url: &str) -> Result<Self, BackendError> {
        let bad = |why: &str| BackendError::Config(format!("SSH host `{url}`: {why}"));
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("it does not start with ssh://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            return Err(bad("a path or query is not allowed after the host"));
        }
        let (user, host_port) = match rest.rsplit_once('@') {
            Some((user, host)) if !user.is_empty() => (Some(user.to_owned()), host),
            Some(_) => return Err(bad("the user before `@` is empty")),
            None => (None, rest),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs a closing `]`"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| {
                        bad("only `:PORT` may follow an IPv6 address in brackets")
                    })?),
                ),
            }
        } else if host_port.matches(':').count() > 1 {
            return Err(bad("an IPv6 address goes in brackets: ssh://user@[::1]:22"));
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("no host"));
        }
        let odd = |text: &str| text.chars().any(|c| c.is_whitespace() || c.is_control());
        if odd(host) || user.as_deref().is_some_and(odd) {
            return Err(bad("spaces and control characters are not allowed"));
        }
        if user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err(bad("a user cannot start with `-`"));
        }
        let port = port
            .map(|p| {
                Some(p)
                    .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be a number from 1 to 65535"))
            })
            .transpose()?;
        Ok(SshDestination {
            user,
            host: host.to_owned(),
            port,
            identity: None,
            known_hosts: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// Checks that the key and known_hosts files it names can be used, so that a typo
    /// is not reported as a refused key or an unknown host.
    pub fn check_files(&self) -> Result<(), BackendError> {
        for (what, file) in [
            ("SSH key", &self.identity),
            ("known_hosts file", &self.known_hosts),
        ] {
            let Some(file) = file else { continue };
            match std::fs::metadata(file) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => {
                    return Err(BackendError::Config(format!(
                        "{what} `{}` of {} is not a file",
                        file.display(),
                        self.url()
                    )));
                }
                Err(e) => {
                    return Err(BackendError::Config(format!(
                        "{what} `{}` of {}: {e}",
                        file.display(),
                        self.url()
                    )));
                }
            }
        }
        Ok(())
    }

    /// `ssh://[user@]host[:port]`, for messages.
    pub fn url(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map_or(String::new(), |u| format!("{u}@"));
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = self.port.map_or(String::new(), |p| format!(":{p}"));
        format!("ssh://{user}{host}{port}")
    }

    /// The options every ssh process of this destination gets, before the host.
    fn options(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push("-o".into());
        args.push(format!(
            "ConnectTimeout={}",
            self.connect_timeout.as_secs().max(1)
        ));
        if let Some(file) = &self.known_hosts {
            // Quoted: ssh reads this option as a list of files separated by spaces.
            args.push("-o".into());
            let quoted = ssh_path(file).replace('\\', "\\\\").replace('"', "\\\"");
            args.push(format!("UserKnownHostsFile=\"{quoted}\""));
            args.push("-o".into());
            args.push("GlobalKnownHostsFile=/dev/null".into());
        }
        if let Some(key) = &self.identity {
            args.push("-i".into());
            args.push(ssh_path(key));
            args.push("-o".into());
            args.push("IdentitiesOnly=yes".into());
        }
        if let Some(port) = self.port {
            args.push("-p".into());
            args.push(port.to_string());
        }
        if let Some(user) = &self.user {
            args.push("-l".into());
            args.push(user.clone());
        }
        args
    }
}

/// An open, multiplexed SSH connection to one host. Dropping the last handle closes it
/// and everything forwarded through it.
pub struct SshSession {
    destination: SshDestination,
    control_dir: tempfile::TempDir,
    master: tokio::sync::Mutex<Option<Child>>,
    stderr: Arc<Mutex<Said>>,
    forward_errors: Arc<Mutex<Said>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    docker_socket: tokio::sync::Mutex<Option<PathBuf>>,
    forwards: tokio::sync::Mutex<HashMap<String, PathBuf>>,
    reopen_failure: Mutex<Option<(std::time::Instant, BackendError)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("destination", &self.destination.url())
            .finish()
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
        {
            task.abort();
        }
        if let Ok(mut master) = self.master.try_lock()
            && let Some(child) = master.as_mut()
        {
            let _ = child.start_kill();
        }
    }
}

impl SshSession {
    /// Opens the connection: authenticates once, checks the host key, and waits until
    /// the connection can carry commands and forwards.
    pub async fn open(destination: SshDestination) -> Result<Arc<Self>, BackendError> {
        destination.check_files()?;
        // Under /tmp rather than a long TMPDIR: unix socket paths are limited to about
        // 100 bytes. Private (0700): its sockets reach the host's engine and servers.
        let base = if std::path::Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        remove_stale_control_dirs(&base);
        let control_dir = tempfile::Builder::new()
            .prefix("redis-move-ssh-")
            .tempdir_in(base)
            .map_err(|e| BackendError::Local(format!("cannot make a control directory: {e}")))?;
        private(control_dir.path(), 0o700)?;
        // Whose it is: a later run removes it if this process dies without cleaning up.
        std::fs::write(
            control_dir.path().join("pid"),
            std::process::id().to_string(),
        )
        .map_err(|e| BackendError::Local(format!("cannot write in the control directory: {e}")))?;
        let stderr = Arc::new(Mutex::new(Said::default()));
        let (master, reader) =
            start_master(&destination, &control_dir.path().join("master"), &stderr).await?;
        tracing::debug!(host = %destination.url(), "SSH connection open");
        Ok(Arc::new(SshSession {
            destination,
            control_dir,
            master: tokio::sync::Mutex::new(Some(master)),
            stderr,
            forward_errors: Arc::new(Mutex::new(Said::default())),
            tasks: Mutex::new(vec![reader]),
            docker_socket: tokio::sync::Mutex::new(None),
            forwards: tokio::sync::Mutex::new(HashMap::new()),
            reopen_failure: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Opens the connection again when it was lost (the host rebooted, the network
    /// dropped it for longer than the keepalives allow): new Docker API connections and
    /// forwarded Redis connections go through the new one (a connection that was open
    /// when the old one died is gone, and its command fails).
    pub async fn ensure_open(&self) -> Result<(), BackendError> {
        let mut master = self.master.lock().await;
        let control = self.control_dir.path().join("master");
        let alive = match master.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)) && control.exists(),
            None => false,
        };
        if alive {
            return Ok(());
        }
        if let Some(mut old) = master.take() {
            let _ = old.start_kill();
            let _ = old.wait().await;
        }
        let _ = std::fs::remove_file(&control);
        tracing::warn!(host = %self.destination.url(), "the SSH connection was lost; opening it again");
        let opened = start_master(&self.destination, &control, &self.stderr).await;
        let failure = opened.as_ref().err().map(|why| {
            let why = match why {
                BackendError::Config(m) => BackendError::Config(format!(
                    "the SSH connection was lost and could not be opened again: {m}"
                )),
                other => other.clone(),
            };
            (std::time::Instant::now(), why)
        });
        if let Ok(mut slot) = self.reopen_failure.lock() {
            *slot = failure;
        }
        let (child, reader) = opened?;
        *master = Some(child);
        self.push_task(reader);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// How many times the connection was opened again (what went through an older one
    /// is gone).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why the connection could not be opened again, if that happened in the last 30
    /// seconds (what a request that went through it should report).
    pub fn recent_reopen_failure(&self) -> Option<BackendError> {
        let slot = self.reopen_failure.lock().ok()?;
        let (when, why) = slot.as_ref()?;
        (when.elapsed() < Duration::from_secs(30)).then(|| why.clone())
    }

    /// Where it goes.
    pub fn destination(&self) -> &SshDestination {
        &self.destination
    }

    /// Starts ssh processes through the open connection (no new authentication).
    fn ssh(&self) -> SshCommand {
        SshCommand {
            control: self.control_dir.path().join("master"),
            options: self.destination.options(),
            host: self.destination.host.clone(),
            errors: self.forward_errors.clone(),
        }
    }

    /// Runs `args` on the host; its exit code, standard output and error.
    pub async fn run(
        &self,
        args: &[&str],
        limit: Duration,
    ) -> Result<(Option<i32>, String, String), BackendError> {
        self.ensure_open().await?;
        let mut command = self.ssh().command(&[], args);
        command.stdin(Stdio::null());
        let output = tokio::time::timeout(limit, command.output())
            .await
            .map_err(|_| {
                BackendError::Timeout(format!(
                    "`{}` on {} took longer than {}",
                    args.join(" "),
                    self.destination.url(),
                    crate::runbook::units::format_duration(limit)
                ))
            })?
            .map_err(|e| BackendError::Local(format!("ssh: {e}")))?;
        Ok((
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// A local socket (private to this process's user) that reaches the Docker Engine of
    /// the host: each connection runs `docker system dial-stdio` there. Checks first
    /// that the host has `docker` and that the login user may use its engine.
    pub async fn docker_socket(self: &Arc<Self>, limit: Duration) -> Result<PathBuf, BackendError> {
        let mut socket = self.docker_socket.lock().await;
        if let Some(path) = socket.as_ref() {
            return Ok(path.clone());
        }
        let (code, _, stderr) = self
            .run(
                &["docker", "version", "--format", "{{.Server.APIVersion}}"],
                limit,
            )
            .await?;
        if code != Some(0) {
            return Err(classify_docker_failure(&self.destination, code, &stderr));
        }
        let path = self.control_dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).map_err(|e| {
            BackendError::Local(format!("cannot listen on `{}`: {e}", path.display()))
        })?;
        private(&path, 0o600)?;
        let task = tokio::spawn(serve(listener, Arc::downgrade(self), |ssh| {
            ssh.command(&[], &["docker", "system", "dial-stdio"])
        }));
        self.push_task(task);
        *socket = Some(path.clone());
        Ok(path)
    }

    /// A unix socket (in the connection's private directory, so that no other local
    /// user can use it) whose connections reach `address` (`host:port`, as the SSH host
    /// sees it) through this connection.
    pub async fn forward(self: &Arc<Self>, address: &str) -> Result<PathBuf, BackendError> {
        let mut forwards = self.forwards.lock().await;
        if let Some(path) = forwards.get(address) {
            return Ok(path.clone());
        }
        let path = self
            .control_dir
            .path()
            .join(format!("redis-{}.sock", forwards.len()));
        let listener = UnixListener::bind(&path).map_err(|e| {
            BackendError::Local(format!("cannot listen on `{}`: {e}", path.display()))
        })?;
        private(&path, 0o600)?;
        let target = address.to_owned();
        let task = tokio::spawn(serve(listener, Arc::downgrade(self), move |ssh| {
            ssh.command(&["-W", &target], &[])
        }));
        self.push_task(task);
        forwards.insert(address.to_owned(), path.clone());
        tracing::debug!(host = %self.destination.url(), %address, "forwarding");
        Ok(path)
    }

    /// A mark of what ssh has said about forwarded connections so far.
    pub fn forward_error_mark(&self) -> usize {
        self.forward_errors.lock().map_or(0, |e| e.total)
    }

    /// The last thing ssh said about a forwarded connection since `mark`, if anything.
    pub fn forward_error_since(&self, mark: usize) -> Option<String> {
        let errors = self.forward_errors.lock().ok()?;
        (errors.total > mark)
            .then(|| errors.lines.back().cloned())
            .flatten()
    }

    fn push_task(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }
}

/// Removes the control directories that runs killed without a chance to clean up left
/// in `base`: this user's, whose `pid` file names a process that is gone (a directory of
/// a run that is alive, or still starting, is left alone).
fn remove_stale_control_dirs(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = own_uid();
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("redis-move-ssh-"));
        let mine = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        let gone = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new("/proc").join(pid.to_string()).exists());
        if named && mine && gone {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// This process's user id, read off a file it has just made.
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    tempfile::tempfile()
        .and_then(|f| f.metadata())
        .map_or(u32::MAX, |m| m.uid())
}

/// Sets `path`'s mode (the control directory and its sockets are this user's alone,
/// whatever the umask).
fn private(path: &std::path::Path, mode: u32) -> Result<(), BackendError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| BackendError::Local(format!("cannot restrict `{}`: {e}", path.display())))
}

/// A path as ssh reads it in an option: `%` is ssh's token character (`%h`, `%%`).
fn ssh_path(path: &std::path::Path) -> String {
    path.display().to_string().replace('%', "%%")
}

/// Starts the master connection at `control` and waits until it accepts sessions (or
/// says why it cannot); its error output is kept in `stderr`.
async fn start_master(
    destination: &SshDestination,
    control: &std::path::Path,
    stderr: &Arc<Mutex<Said>>,
) -> Result<(Child, JoinHandle<()>), BackendError> {
    // The master's one session reads our end of a pipe (`cat` on the host): when
    // redis-move exits, however it exits, the pipe closes, the session ends and the
    // master with it, so no SSH connection outlives the run.
    let mut command = Command::new("ssh");
    command
        .arg("-M")
        .arg("-T")
        .arg("-S")
        .arg(ssh_path(control))
        .args(["-o", "ControlPersist=no", "-o", "ExitOnForwardFailure=yes"])
        .args(destination.options())
        .arg("--")
        .arg(&destination.host)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut master = command.spawn().map_err(|e| {
        BackendError::Config(format!(
            "cannot start `ssh` for {}: {e} (is the OpenSSH client installed?)",
            destination.url()
        ))
    })?;
    if let Ok(mut said) = stderr.lock() {
        said.lines.clear();
    }
    let pipe = master
        .stderr
        .take()
        .ok_or_else(|| BackendError::Local("ssh has no error output".into()))?;
    let mut reader = keep_lines(pipe, stderr.clone(), destination.url());
    let limit = destination.connect_timeout + Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    loop {
        if control.exists() {
            return Ok((master, reader));
        }
        if let Some(status) = master
            .try_wait()
            .map_err(|e| BackendError::Local(format!("ssh for {}: {e}", destination.url())))?
        {
            // Let the reader take the last lines.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
            let lines: Vec<String> = stderr
                .lock()
                .map(|said| said.lines.iter().cloned().collect())
                .unwrap_or_default();
            return Err(classify_connect_failure(destination, &lines, status.code()));
        }
        if started.elapsed() > limit {
            let _ = master.start_kill();
            return Err(BackendError::Timeout(format!(
                "SSH connection to {} was not up within {}",
                destination.url(),
                crate::runbook::units::format_duration(limit)
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts more ssh processes through an open master (owned, so that tasks can keep it).
#[derive(Clone)]
struct SshCommand {
    control: PathBuf,
    options: Vec<String>,
    host: String,
    errors: Arc<Mutex<Said>>,
}

/// The last lines ssh printed, and how many it printed in all.
#[derive(Default)]
pub struct Said {
    lines: VecDeque<String>,
    total: usize,
}

impl SshCommand {
    /// `ssh -S MASTER OPTIONS [local] -- HOST [remote]`.
    fn command(&self, local: &[&str], remote: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-S")
            .arg(ssh_path(&self.control))
            .args(["-o", "ControlMaster=no"])
            .args(&self.options)
            .args(local)
            .arg("--")
            .arg(&self.host)
            .args(remote)
            .kill_on_drop(true);
        command
    }
}

/// Relays each connection of `listener` through the session (opened again first when
/// it was lost), each to a process `command` makes; ends with the session.
async fn serve<F>(listener: UnixListener, session: std::sync::Weak<SshSession>, command: F)
where
    F: Fn(&SshCommand) -> Command + Send + Sync + 'static,
{
    let command = Arc::new(command);
    while let Ok((stream, _)) = listener.accept().await {
        let Some(session) = session.upgrade() else {
            return;
        };
        let command = command.clone();
        tokio::spawn(async move {
            if let Err(e) = session.ensure_open().await {
                said(&session.forward_errors, e.to_string());
                return;
            }
            let ssh = session.ssh();
            relay(stream, command(&ssh), ssh.errors.clone()).await;
        });
    }
}

/// Copies bytes both ways between `stream` and a new ssh process, until both sides end.
async fn relay<S>(stream: S, mut command: Command, errors: Arc<Mutex<Said>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            said(&errors, format!("cannot start ssh: {e}"));
            return;
        }
    };
    let (Some(mut child_in), Some(mut child_out), Some(child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let upstream = async {
        let _ = tokio::io::copy(&mut read_half, &mut child_in).await;
        let _ = child_in.shutdown().await;
        drop(child_in);
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut child_out, &mut write_half).await;
        let _ = write_half.shutdown().await;
    };
    let complaints = async {
        let mut lines = BufReader::new(child_err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(%line, "ssh relay");
            // A host's debug output is not a reason for anything.
            if !line.trim().is_empty() && !line.starts_with("debug") {
                said(&errors, line);
            }
        }
    };
    tokio::join!(upstream, downstream, complaints);
    let _ = child.wait().await;
}

/// Keeps `line` among the last lines ssh printed.
fn said(errors: &Mutex<Said>, line: String) {
    if let Ok(mut errors) = errors.lock() {
        errors.total += 1;
        if errors.lines.len() == KEPT_LINES {
            errors.lines.pop_front();
        }
        errors.lines.push_back(line);
    }
}

/// Keeps the last lines of an ssh process's error output (and traces them).
fn keep_lines(
    pipe: tokio::process::ChildStderr,
    lines: Arc<Mutex<Said>>,
    host: String,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            tracing::debug!(%host, %line, "ssh");
            said(&lines, line);
        }
    })
}

/// Why the SSH connection could not be opened, from what ssh printed.
fn classify_connect_failure(
    destination: &SshDestination,
    lines: &[String],
    code: Option<i32>,
) -> BackendError {
    let url = destination.url();
    let said = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("@@@"))
        .collect::<Vec<_>>();
    let all = said.join("\n");
    let known_hosts = destination
        .known_hosts
        .as_ref()
        .map_or("your known_hosts".to_owned(), |f| {
            format!("`{}`", f.display())
        });
    let last = said
        .iter()
        .rev()
        .find(|l| !l.starts_with("Warning"))
        .copied()
        .unwrap_or("no message")
        .to_owned();
    if all.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return BackendError::Config(format!(
            "SSH host key mismatch for {url}: the key the host presented is not the one in {known_hosts}. \
             This is what a man-in-the-middle looks like, and also what a rebuilt host looks like: \
             check the new fingerprint out of band, then replace the entry (ssh-keygen -R)"
        ));
    }
    if all.contains("host key is known") || all.contains("Host key verification failed") {
        return BackendError::Config(format!(
            "SSH host key of {url} is not in {known_hosts}: redis-move never accepts an unknown host key; \
             check its fingerprint and add it (ssh-keyscan, or connect once with ssh)"
        ));
    }
    if all.contains("UNPROTECTED PRIVATE KEY FILE") {
        return BackendError::Config(format!(
            "SSH key of {url} is readable by other users, so ssh refuses it: `chmod 600` it"
        ));
    }
    if all.contains("Permission denied") {
        return BackendError::Config(format!(
            "SSH authentication refused by {url} ({last}): load the key into ssh-agent, or name it with \
             `ssh: {{ identity: FILE }}` on the Docker target (keys with a passphrase must be in the agent)"
        ));
    }
    if all.contains("Could not resolve hostname") {
        return BackendError::Unreachable(format!("SSH host {url}: {last}"));
    }
    if all.contains("timed out") {
        return BackendError::Timeout(format!("SSH connection to {url}: {last}"));
    }
    if all.contains("Connection refused") || all.contains("No route to host") {
        return BackendError::Unreachable(format!("SSH connection to {url}: {last}"));
    }
    BackendError::Unreachable(format!(
        "SSH connection to {url} failed (ssh exited with {}): {last}",
        code.map_or("a signal".to_owned(), |c| c.to_string())
    ))
}

/// Why the host's Docker Engine cannot be used through SSH, from what `docker version`
/// printed there.
fn classify_docker_failure(
    destination: &SshDestination,
    code: Option<i32>,
    stderr: &str,
) -> BackendError {
    let url = destination.url();
    let user = destination.user.as_deref().unwrap_or("the login user");
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message");
    let lower = stderr.to_lowercase();
    if code == Some(127)
        || lower.contains("command not found")
        || lower.contains("not found") && lower.contains("docker") && !lower.contains("daemon")
    {
        return BackendError::Config(format!(
            "no `docker` command on {url}: redis-move reaches the engine there through `docker system dial-stdio`; install the Docker CLI on the host ({last})"
        ));
    }
    if lower.contains("permission denied") {
        return BackendError::Command(format!(
            "permission denied on the Docker socket of {url} for {user}: add the user to the `docker` group there, or connect as a user who may use the engine ({last})"
        ));
    }
    if lower.contains("cannot connect to the docker daemon")
        || lower.contains("is the docker daemon running")
    {
        return BackendError::Unreachable(format!(
            "the Docker Engine on {url} is not running or not at the host's DOCKER_HOST ({last})"
        ));
    }
    BackendError::Command(format!(
        "`docker version` on {url} failed (exit {}): {last}",
        code.map_or("by a signal".to_owned(), |c| c.to_string())
    ))
}

/// Open SSH connections, one per destination, shared by everything that goes through
/// the same host.
#[derive(Default)]
pub struct SshSessions {
    open: tokio::sync::Mutex<HashMap<SshDestination, Arc<SshSession>>>,
}

impl SshSessions {
    /// The connection to `destination`, opened on first use.
    pub async fn get(&self, destination: &SshDestination) -> Result<Arc<SshSession>, BackendError> {
        let mut open = self.open.lock().await;
        if let Some(session) = open.get(destination) {
            session.ensure_open().await?;
            return Ok(session.clone());
        }
        let session = SshSession::open(destination.clone()).await?;
        open.insert(destination.clone(), session.clone());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ssh_urls() {
        let d = SshDestination::parse("ssh://deploy@vps.example:2222").unwrap();
        assert_eq!(d.user.as_deref(), Some("deploy"));
        assert_eq!(d.host, "vps.example");
        assert_eq!(d.port, Some(2222));
        assert_eq!(d.url(), "ssh://deploy@vps.example:2222");
        let d = SshDestination::parse("ssh://vps").unwrap();
        assert_eq!((d.user, d.port), (None, None));
        let d = SshDestination::parse("ssh://root@[::1]:22").unwrap();
        assert_eq!(d.host, "::1");
        assert_eq!(d.url(), "ssh://root@[::1]:22");
        for bad in [
            "ssh://",
            "ssh://@host",
            "ssh://host:0",
            "ssh://host:99999",
            "ssh://host/path",
            "ssh://-oProxyCommand=x",
            "ssh://-x@host",
            "ssh://host name",
            "ssh://root@::1",
            "ssh://root@[::1]x",
            "ssh://root@host:+22",
            "ssh://us er@host",
            "ssh://host\nProxyCommand",
            "tcp://host",
        ] {
            assert!(SshDestination::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_control_directory_whose_run_is_gone_is_removed_and_a_live_one_kept() {
        let base = tempfile::tempdir().unwrap();
        let stale = base.path().join("redis-move-ssh-stale");
        let live = base.path().join("redis-move-ssh-live");
        let starting = base.path().join("redis-move-ssh-starting");
        for dir in [&stale, &live, &starting] {
            std::fs::create_dir(dir).unwrap();
        }
        // A run that is gone (a pid no process has), and one alive (this test).
        let child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        let mut child = child;
        child.wait().unwrap();
        std::fs::write(stale.join("pid"), dead.to_string()).unwrap();
        std::fs::write(live.join("pid"), std::process::id().to_string()).unwrap();
        remove_stale_control_dirs(base.path());
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(starting.exists());
    }

    #[test]
    fn says_which_ssh_failure_it_was() {
        let d = SshDestination::parse("ssh://u@h").unwrap();
        let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
        let mismatch = classify_connect_failure(
            &d,
            &lines(
                "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
            ),
            Some(255),
        );
        assert!(
            mismatch.to_string().contains("host key mismatch"),
            "{mismatch}"
        );
        let unknown = classify_connect_failure(
            &d,
            &lines(
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.",
            ),
            Some(255),
        );
        assert!(unknown.to_string().contains("is not in"), "{unknown}");
        let auth =
            classify_connect_failure(&d, &lines("u@h: Permission denied (publickey)."), Some(255));
        assert!(
            auth.to_string().contains("authentication refused"),
            "{auth}"
        );
        let refused = classify_connect_failure(
            &d,
            &lines("ssh: connect to host h port 22: Connection refused"),
            Some(255),
        );
        assert!(matches!(refused, BackendError::Unreachable(_)), "{refused}");
        let no_docker =
            classify_docker_failure(&d, Some(127), "bash: line 1: docker: command not found\n");
        assert!(
            no_docker.to_string().contains("no `docker` command"),
            "{no_docker}"
        );
        let denied = classify_docker_failure(
            &d,
            Some(1),
            "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
        );
        assert!(
            denied
                .to_string()
                .contains("permission denied on the Docker socket"),
            "{denied}"
        );
        let down = classify_docker_failure(
            &d,
            Some(1),
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        );
        assert!(matches!(down, BackendError::Unreachable(_)), "{down}");
    }
}
