//! A second Docker Engine on this machine, for the tests and the sandbox that need two
//! hosts: its own `dockerd` with its own data root, exec root, socket, pid file and
//! bridge (never `docker0`, which belongs to the first engine), optionally listening on
//! TCP with mutual TLS. It runs detached (its own session), so that the sandbox can
//! start it in one process and `down` can stop it from another, through its pid file.
//!
//! Its containers reach the first engine's published ports through the gateway address
//! of their network (this machine), as two hosts reach each other's published ports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to start a second engine.
#[derive(Clone, Debug)]
pub struct EngineSpec {
    /// Its directory (data root, exec root, socket, pid file, log).
    pub dir: PathBuf,
    /// The bridge of its default network (at most 15 characters; created here).
    pub bridge: String,
    /// The bridge's address, `10.213.252.1/24`.
    pub bridge_address: String,
    /// Listen on this TCP address (`127.0.0.1:port`) too, with TLS when `tls` is set.
    pub tcp: Option<String>,
    /// CA, server certificate and key: clients must present a certificate of this CA.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// A second engine that is running.
#[derive(Debug)]
pub struct SecondEngine {
    /// `unix://...` of its socket.
    pub host: String,
    /// Its directory.
    pub dir: PathBuf,
    bridge: String,
}

/// Why a second engine cannot run here (then tests skip loudly, or fail in CI).
pub fn unavailable() -> Option<String> {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        return Some("a second dockerd needs root".into());
    }
    if Command::new("dockerd").arg("--version").output().is_err() {
        return Some("dockerd is not installed".into());
    }
    None
}

/// The storage driver of the first engine (a second one on the same machine can use the
/// same, where the default would not work, e.g. fuse-overlayfs in a VM).
fn storage_driver() -> Option<String> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Driver}}"])
        .output()
        .ok()?;
    let driver = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!driver.is_empty()).then_some(driver)
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl SecondEngine {
    /// Starts the engine (or finds the one already running in `spec.dir`), and waits
    /// until it answers.
    pub fn start(spec: &EngineSpec) -> Result<SecondEngine, String> {
        if let Some(running) = SecondEngine::attach(&spec.dir, &spec.bridge) {
            return Ok(running);
        }
        if let Some(why) = unavailable() {
            return Err(why);
        }
        std::fs::create_dir_all(spec.dir.join("data")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(spec.dir.join("exec")).map_err(|e| e.to_string())?;
        if !ip(&["link", "show", &spec.bridge]) {
            if !ip(&["link", "add", "name", &spec.bridge, "type", "bridge"]) {
                return Err(format!("cannot create bridge {}", spec.bridge));
            }
            ip(&["addr", "add", &spec.bridge_address, "dev", &spec.bridge]);
        }
        ip(&["link", "set", &spec.bridge, "up"]);
        let mut config = serde_json::json!({});
        if let Some(driver) = storage_driver() {
            config["storage-driver"] = driver.into();
        }
        let config_file = spec.dir.join("daemon.json");
        std::fs::write(&config_file, config.to_string()).map_err(|e| e.to_string())?;
        let socket = spec.dir.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let mut args: Vec<String> = vec![
            "--config-file".into(),
            config_file.display().to_string(),
            "--data-root".into(),
            spec.dir.join("data").display().to_string(),
            "--exec-root".into(),
            spec.dir.join("exec").display().to_string(),
            "--pidfile".into(),
            spec.dir.join("docker.pid").display().to_string(),
            "--bridge".into(),
            spec.bridge.clone(),
            // The first engine owns the machine's iptables chains; this one publishes
            // ports through its userland proxy only.
            "--iptables=false".into(),
            "--ip-masq=false".into(),
            "-H".into(),
            host.clone(),
        ];
        if let Some(tcp) = &spec.tcp {
            args.push("-H".into());
            args.push(format!("tcp://{tcp}"));
        }
        if let Some((ca, cert, key)) = &spec.tls {
            args.push("--tlsverify".into());
            args.push(format!("--tlscacert={}", ca.display()));
            args.push(format!("--tlscert={}", cert.display()));
            args.push(format!("--tlskey={}", key.display()));
        }
        let log = std::fs::File::create(spec.dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        // Forked into its own session: it outlives the process that started it (the
        // sandbox's `up`), and is nobody's zombie when it stops.
        let mut command = Command::new("setsid");
        command
            .arg("-f")
            .arg("dockerd")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        command
            .status()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let started = Instant::now();
        loop {
            if Command::new("docker")
                .args(["-H", &host, "version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(spec.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "the second dockerd did not answer within 60s:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(SecondEngine {
            host,
            dir: spec.dir.clone(),
            bridge: spec.bridge.clone(),
        })
    }

    /// The engine already running in `dir`, if any (its pid file names a live process).
    pub fn attach(dir: &Path, bridge: &str) -> Option<SecondEngine> {
        let pid = std::fs::read_to_string(dir.join("docker.pid")).ok()?;
        let pid = pid.trim();
        if !Path::new("/proc").join(pid).exists() {
            return None;
        }
        let host = format!("unix://{}", dir.join("docker.sock").display());
        Command::new("docker")
            .args(["-H", &host, "version"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(SecondEngine {
            host,
            dir: dir.to_path_buf(),
            bridge: bridge.to_owned(),
        })
    }

    /// `docker -H <this engine> args...`; its standard output, or the error.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "docker -H {} {args:?}: {}",
                self.host,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A bollard client of it.
    pub fn client(&self) -> bollard::Docker {
        bollard::Docker::connect_with_unix(&self.host, 120, bollard::API_DEFAULT_VERSION)
            .expect("a client of the second engine")
    }

    /// Removes its containers and networks, stops it, and removes its bridge and
    /// directory. (An engine keeps its networks' bridges when it stops, for its next
    /// start: with its data root gone they would be orphans holding the subnet.)
    pub fn stop(self) {
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(&ids);
                let _ = self.docker(&args);
            }
        }
        if let Ok(ids) = self.docker(&["network", "ls", "-q", "--filter", "type=custom"]) {
            for id in ids.split_whitespace() {
                let _ = self.docker(&["network", "rm", id]);
            }
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("docker.pid")) {
            let pid = pid.trim().to_owned();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let started = Instant::now();
            while Path::new("/proc").join(&pid).exists()
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            if Path::new("/proc").join(&pid).exists() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
        ip(&["link", "set", &self.bridge, "down"]);
        ip(&["link", "delete", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes the bridges left by an engine that stopped without removing its networks
/// (a crash, a kill): every `br-*` interface holding `gateway` (an address of a subnet
/// that only those networks use).
pub fn delete_orphan_bridges(gateway: &str) {
    let Ok(out) = Command::new("ip").args(["-br", "addr"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let holds = fields.any(|f| f.split('/').next() == Some(gateway));
        if name.starts_with("br-") && holds {
            ip(&["link", "delete", name]);
        }
    }
}
