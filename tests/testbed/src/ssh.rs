//! A real OpenSSH server on a loopback port, for the tests and the sandbox that reach a
//! host over SSH: its own host key, client keys of its own (one allowed, one not, one
//! whose sessions cannot find `docker`), and a known_hosts file naming it. Nothing of
//! the user's `~/.ssh` is read or changed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::redis::which;

/// A running `sshd` and the files of its clients.
pub struct SshServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The user to log in as (the one running the tests).
    pub user: String,
    /// Key that may log in (no passphrase).
    pub key: PathBuf,
    /// Key that may log in, but whose sessions have no `docker` on their PATH.
    pub key_without_docker: PathBuf,
    /// Key that the server does not accept.
    pub unknown_key: PathBuf,
    /// Key that may log in, encrypted with [`KEY_PASSPHRASE`] (usable from an agent).
    pub encrypted_key: PathBuf,
    /// known_hosts naming this server's key.
    pub known_hosts: PathBuf,
    /// known_hosts naming another key for this server (what a changed host looks like).
    pub wrong_known_hosts: PathBuf,
    /// known_hosts that does not name this server.
    pub empty_known_hosts: PathBuf,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The passphrase of [`SshServer::encrypted_key`]: it must never appear in anything
/// redis-move writes.
pub const KEY_PASSPHRASE: &str = "Key-Passphrase-9981";

/// Where and how the server runs, and what its sessions see.
#[derive(Clone, Debug, Default)]
pub struct SshServerOptions {
    /// `DOCKER_HOST` of the sessions (default: the host's own).
    pub docker_host: Option<String>,
    /// Its directory (default: a temporary one, removed with the server).
    pub dir: Option<PathBuf>,
    /// Its port (default: a free one).
    pub port: Option<u16>,
    /// Runs as a daemon that outlives this process (the sandbox); stopped with
    /// [`stop_detached`]. Otherwise it stops when the server is dropped.
    pub detached: bool,
}

/// Stops the detached server whose directory is `dir` (nothing when none runs).
pub fn stop_detached(dir: &Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("sshd.pid")) {
        let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    }
    let _ = std::fs::remove_file(dir.join("sshd.pid"));
}

fn sshd_binary() -> Option<PathBuf> {
    which("sshd").or_else(|| {
        let path = PathBuf::from("/usr/sbin/sshd");
        path.exists().then_some(path)
    })
}

fn keygen(path: &Path, comment: &str) {
    keygen_with(path, comment, "");
}

fn keygen_with(path: &Path, comment: &str, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

fn public(path: &Path) -> String {
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

impl SshServer {
    /// Starts sshd, or `None` with a loud message when OpenSSH's server is not
    /// installed (with `REDIS_MOVE_REQUIRE_DOCKER=1`, as in CI, that fails the test).
    pub fn start(options: SshServerOptions) -> Option<SshServer> {
        let Some(sshd) = sshd_binary() else {
            if std::env::var("REDIS_MOVE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
                panic!("REDIS_MOVE_REQUIRE_DOCKER=1 but sshd is not installed (openssh-server)");
            }
            eprintln!("\n!!!! SKIPPED: this test needs sshd (Debian: openssh-server) !!!!\n");
            return None;
        };
        // sshd wants its privilege-separation directory even when it never uses it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let (dir, temp) = match &options.dir {
            Some(dir) => {
                stop_detached(dir);
                let _ = std::fs::remove_dir_all(dir);
                std::fs::create_dir_all(dir).expect("sshd dir");
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("rmtest-sshd-")
                    .tempdir()
                    .expect("sshd dir");
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let path = |name: &str| dir.join(name);
        keygen(&path("host_key"), "rmtest host");
        keygen(&path("other_host_key"), "rmtest other host");
        keygen(&path("id_client"), "rmtest client");
        keygen(&path("id_nodocker"), "rmtest client without docker");
        keygen(&path("id_unknown"), "rmtest stranger");
        keygen_with(&path("id_encrypted"), "rmtest encrypted", KEY_PASSPHRASE);
        let docker_env = options.docker_host.as_ref().map_or(String::new(), |h| {
            format!("environment=\"DOCKER_HOST={h}\" ")
        });
        std::fs::write(
            path("authorized_keys"),
            format!(
                "{docker_env}{}\nenvironment=\"PATH=/nonexistent\" {}\n{docker_env}{}\n",
                public(&path("id_client")),
                public(&path("id_nodocker")),
                public(&path("id_encrypted"))
            ),
        )
        .unwrap();
        let port = options.port.unwrap_or_else(free_port);
        let host_entry = format!("[127.0.0.1]:{port}");
        let key_type_and_body = |key: &str| {
            let public = public(&path(key));
            let mut parts = public.split_whitespace();
            format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
        };
        std::fs::write(
            path("known_hosts"),
            format!("{host_entry} {}\n", key_type_and_body("host_key")),
        )
        .unwrap();
        std::fs::write(
            path("wrong_known_hosts"),
            format!("{host_entry} {}\n", key_type_and_body("other_host_key")),
        )
        .unwrap();
        std::fs::write(path("empty_known_hosts"), "").unwrap();
        let user = current_user();
        std::fs::write(
            path("sshd_config"),
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {authorized}\n\
                 StrictModes no\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 PermitUserEnvironment yes\n\
                 UsePAM no\n\
                 AllowTcpForwarding yes\n\
                 MaxSessions 100\n\
                 MaxStartups 100:30:200\n\
                 LogLevel DEBUG1\n",
                host_key = path("host_key").display(),
                pid = path("sshd.pid").display(),
                authorized = path("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut child = None;
        if options.detached {
            // sshd listens before it detaches: once this returns, it accepts.
            let status = Command::new(sshd)
                .arg("-f")
                .arg(path("sshd_config"))
                .arg("-E")
                .arg(path("sshd.log"))
                .stdin(Stdio::null())
                .status()
                .expect("start sshd");
            assert!(
                status.success(),
                "sshd failed ({status}): {}",
                std::fs::read_to_string(path("sshd.log")).unwrap_or_default()
            );
        } else {
            let mut running = Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(path("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start sshd");
            let stderr = running.stderr.take().unwrap();
            let kept = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    kept.lock().unwrap().push(line);
                }
            });
            child = Some(running);
        }
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                panic!("sshd exited ({status}): {}", log.lock().unwrap().join("\n"));
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sshd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(SshServer {
            port,
            user,
            key: path("id_client"),
            key_without_docker: path("id_nodocker"),
            unknown_key: path("id_unknown"),
            encrypted_key: path("id_encrypted"),
            known_hosts: path("known_hosts"),
            wrong_known_hosts: path("wrong_known_hosts"),
            empty_known_hosts: path("empty_known_hosts"),
            dir,
            _temp: temp,
            child,
            log,
        })
    }

    /// `ssh://user@127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The server's directory (keys, config, known_hosts).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What sshd has logged so far (DEBUG1: channel opens name their targets).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl SshServer {
    /// Stops the server and keeps its files (keys, known_hosts), as a host that goes
    /// down does.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The user running this process.
pub fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".to_owned())
}
