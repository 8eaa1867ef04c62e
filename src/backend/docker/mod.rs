//! The Docker Engine via bollard: one client per target (unix socket, tcp, TLS, or the
//! `DOCKER_HOST`/`DOCKER_CERT_PATH`/`DOCKER_TLS_VERIFY` defaults), API version
//! negotiated, and the container, log, image and volume operations of the actions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    ListVolumesOptions, LogsOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use regex::Regex;

use crate::backend::BackendError;
use crate::backend::ssh::{SshDestination, SshSession, SshSessions};
use crate::redact::Redactor;
use crate::value::Value;

pub mod change;

/// Default time limit of one API request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one Docker Engine.
#[derive(Clone, Debug)]
pub struct DockerBackend {
    docker: Docker,
    /// Where it points, for messages.
    pub endpoint: String,
    /// The SSH connection it goes through, kept open as long as the client lives.
    _ssh: Option<Arc<SshSession>>,
}

/// Which containers an action is about.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Regex on names (without Docker's leading `/`).
    pub name: Option<Regex>,
    /// Labels that must match exactly.
    pub labels: Vec<(String, String)>,
    /// Docker state (`running`, `exited`, ...).
    pub state: Option<String>,
}

/// Where and how to reach one Docker Engine, every value resolved. A `None` host falls
/// back to Docker's own environment (`DOCKER_HOST`, then the Docker context named by
/// `context`, `DOCKER_CONTEXT` or the CLI's current context), then the local socket; a
/// `None` TLS to `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` (or the context's certificates).
#[derive(Clone, Debug)]
pub struct DockerEndpoint {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `ssh://user@host`.
    pub host: Option<String>,
    /// A Docker context to take the host from when `host` is `None`.
    pub context: Option<String>,
    /// Client key, certificate and CA for TLS over TCP.
    pub tls: Option<DockerTlsFiles>,
    /// Key, known hosts and connect timeout for `ssh://`.
    pub ssh: SshOptions,
    /// Time limit of one API request.
    pub timeout: Duration,
}

/// The SSH settings of a Docker target (each `None`: ssh's own default).
#[derive(Clone, Debug, Default)]
pub struct SshOptions {
    /// Private key to offer.
    pub identity: Option<PathBuf>,
    /// known_hosts file to check the host key against.
    pub known_hosts: Option<PathBuf>,
    /// Time limit of opening the connection.
    pub connect_timeout: Option<Duration>,
}

impl SshOptions {
    /// The destination of `url` with these settings.
    pub fn destination(&self, url: &str) -> Result<SshDestination, BackendError> {
        let mut destination = SshDestination::parse(url)?;
        destination.identity = self.identity.clone();
        destination.known_hosts = self.known_hosts.clone();
        if let Some(limit) = self.connect_timeout {
            destination.connect_timeout = limit;
        }
        Ok(destination)
    }
}

/// The files of a TLS connection to a Docker Engine.
#[derive(Clone, Debug)]
pub struct DockerTlsFiles {
    /// Client key (PEM).
    pub key: PathBuf,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// CA certificate (PEM).
    pub ca: PathBuf,
}

impl DockerTlsFiles {
    /// `key.pem`, `cert.pem` and `ca.pem` of `dir` (Docker's layout).
    pub fn in_dir(dir: &Path) -> Self {
        DockerTlsFiles {
            key: dir.join("key.pem"),
            cert: dir.join("cert.pem"),
            ca: dir.join("ca.pem"),
        }
    }
}

impl Default for DockerEndpoint {
    fn default() -> Self {
        DockerEndpoint {
            host: None,
            context: None,
            tls: None,
            ssh: SshOptions::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// How redis-move talks to one engine: the one place the transport is chosen.
#[derive(Clone, Debug, PartialEq)]
enum Transport {
    /// A local unix socket.
    Unix(String),
    /// Plain HTTP over TCP.
    Tcp(String),
    /// HTTPS with a client certificate (mutual TLS).
    TcpTls(String, PathBuf, PathBuf, PathBuf),
    /// The engine of an SSH host, through `docker system dial-stdio` there.
    Ssh(String),
}

/// The Docker CLI's configuration directory (`DOCKER_CONFIG`, else `~/.docker`).
fn docker_config_dir() -> Option<PathBuf> {
    match std::env::var("DOCKER_CONFIG") {
        Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var("HOME")
            .ok()
            .map(|h| PathBuf::from(h).join(".docker")),
    }
}

/// The host (and TLS files, when the context keeps any) of Docker context `name`, as the
/// Docker CLI stores it (`contexts/meta/<sha256 of the name>/meta.json`).
fn context_endpoint(name: &str) -> Result<(String, Option<DockerTlsFiles>), BackendError> {
    use sha2::Digest;
    let config = docker_config_dir().ok_or_else(|| {
        BackendError::Config(format!(
            "Docker context `{name}`: no Docker config directory (HOME is not set)"
        ))
    })?;
    let id = format!("{:x}", sha2::Sha256::digest(name.as_bytes()));
    let meta = config.join("contexts/meta").join(&id).join("meta.json");
    let text = std::fs::read_to_string(&meta).map_err(|e| {
        BackendError::Config(format!(
            "Docker context `{name}` is not defined (`{}`: {e}); `docker context ls` lists the contexts",
            meta.display()
        ))
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        BackendError::Config(format!(
            "Docker context `{name}`: `{}`: {e}",
            meta.display()
        ))
    })?;
    let host = json
        .pointer("/Endpoints/docker/Host")
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| BackendError::Config(format!("Docker context `{name}` has no Docker host")))?
        .to_owned();
    let tls_dir = config.join("contexts/tls").join(&id).join("docker");
    let tls = DockerTlsFiles::in_dir(&tls_dir);
    let tls = tls.cert.exists().then_some(tls);
    Ok((host, tls))
}

/// The context the Docker CLI would use: `DOCKER_CONTEXT`, else the config's
/// `currentContext`; `None` for the built-in `default`.
fn current_context() -> Option<String> {
    let name = match std::env::var("DOCKER_CONTEXT") {
        Ok(name) if !name.is_empty() => name,
        _ => {
            let config = docker_config_dir()?.join("config.json");
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(config).ok()?).ok()?;
            json.get("currentContext")?.as_str()?.to_owned()
        }
    };
    (name != "default" && !name.is_empty()).then_some(name)
}

impl DockerEndpoint {
    /// The SSH host of this engine when it is reached over SSH; `None` for the local
    /// engine (whose host is this machine). A TCP engine is a remote host that
    /// redis-move cannot forward through.
    pub fn ssh_destination(&self) -> Result<Option<SshDestination>, BackendError> {
        match self.transport()? {
            Transport::Ssh(url) => self.ssh.destination(&url).map(Some),
            Transport::Unix(_) => Ok(None),
            Transport::Tcp(url) | Transport::TcpTls(url, ..) => Err(BackendError::Config(format!(
                "Redis cannot be reached through the Docker host {url}: redis-move forwards connections only through an ssh:// host"
            ))),
        }
    }

    /// Chooses the transport: the target's host, else `DOCKER_HOST`, else a Docker
    /// context, else the local socket; TLS files from the target, the environment or the
    /// context.
    fn transport(&self) -> Result<Transport, BackendError> {
        let env_tls = || {
            std::env::var("DOCKER_TLS_VERIFY")
                .is_ok_and(|v| !v.is_empty() && v != "0")
                .then(|| {
                    let dir = std::env::var("DOCKER_CERT_PATH")
                        .ok()
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .or_else(docker_config_dir)
                        .unwrap_or_default();
                    DockerTlsFiles::in_dir(&dir)
                })
        };
        let (host, tls) = match (&self.host, &self.context) {
            (Some(host), _) => (host.clone(), self.tls.clone().or_else(env_tls)),
            (None, Some(context)) => {
                let (host, tls) = context_endpoint(context)?;
                (host, self.tls.clone().or(tls))
            }
            (None, None) => match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
                Some(host) => (host, self.tls.clone().or_else(env_tls)),
                None => match current_context() {
                    Some(context) => {
                        let (host, tls) = context_endpoint(&context)?;
                        (host, self.tls.clone().or(tls))
                    }
                    None => ("unix:///var/run/docker.sock".to_owned(), None),
                },
            },
        };
        if host.starts_with("unix://") {
            Ok(Transport::Unix(host))
        } else if host.starts_with("ssh://") {
            Ok(Transport::Ssh(host))
        } else if host.starts_with("tcp://")
            || host.starts_with("http://")
            || host.starts_with("https://")
        {
            Ok(match tls {
                Some(files) => Transport::TcpTls(host, files.key, files.cert, files.ca),
                None => Transport::Tcp(host),
            })
        } else {
            Err(BackendError::Config(format!(
                "Docker host `{host}` is not supported (use unix://, tcp:// or ssh://)"
            )))
        }
    }
}

impl DockerBackend {
    /// Connects to `endpoint` (Docker's environment defaults where it says nothing); an
    /// `ssh://` host goes through its connection in `sessions` (opened when needed).
    pub async fn connect(
        endpoint: &DockerEndpoint,
        sessions: &SshSessions,
    ) -> Result<Self, BackendError> {
        let secs = endpoint.timeout.as_secs().max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let mut ssh = None;
        let (docker, endpoint_text) = match endpoint.transport()? {
            Transport::Unix(h) => (Docker::connect_with_unix(&h, secs, version), h),
            Transport::Tcp(h) => (Docker::connect_with_http(&h, secs, version), h),
            Transport::TcpTls(h, key, cert, ca) => {
                for file in [&key, &cert, &ca] {
                    if !file.exists() {
                        return Err(BackendError::Config(format!(
                            "Docker endpoint {h}: TLS file `{}` does not exist",
                            file.display()
                        )));
                    }
                }
                (
                    Docker::connect_with_ssl(&h, &key, &cert, &ca, secs, version),
                    format!("{h} (TLS)"),
                )
            }
            Transport::Ssh(h) => {
                let session = sessions.get(&endpoint.ssh.destination(&h)?).await?;
                let socket = session.docker_socket(endpoint.timeout).await?;
                let socket = format!("unix://{}", socket.display());
                ssh = Some(session);
                (Docker::connect_with_unix(&socket, secs, version), h)
            }
        };
        let endpoint = endpoint_text;
        let docker =
            docker.map_err(|e| BackendError::Config(format!("Docker endpoint {endpoint}: {e}")))?;
        // Negotiation talks to the engine; an unreachable engine is reported by the first
        // real request instead, with the action's context.
        let docker = match docker.clone().negotiate_version().await {
            Ok(negotiated) => negotiated,
            Err(_) => docker,
        };
        Ok(DockerBackend {
            docker,
            endpoint,
            _ssh: ssh,
        })
    }

    /// What a failed request means: when it went over SSH and the connection was lost
    /// and could not be opened again, why not (a changed host key, a refused key), not
    /// the reset connection that hid it.
    pub fn failed(&self, e: bollard::errors::Error) -> BackendError {
        match self
            ._ssh
            .as_ref()
            .and_then(|ssh| ssh.recent_reopen_failure())
        {
            Some(why) => why,
            None => docker_error(&self.endpoint, e),
        }
    }

    /// The bollard client (for the executor's mutating operations). client (for the executor's mutating operations).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }

    /// Copies the file at `path` inside container `name` to `out` through the Engine's
    /// archive API (what `docker cp` does); the bytes copied. The archive is spooled to a
    /// temporary file beside `out`, so memory stays flat whatever the file's size.
    pub async fn copy_file_out(
        &self,
        name: &str,
        path: &str,
        out: &Path,
    ) -> Result<u64, BackendError> {
        use tokio::io::AsyncWriteExt;
        let dir = out.parent().unwrap_or(Path::new("."));
        let local = |e: std::io::Error| BackendError::Local(format!("`{}`: {e}", out.display()));
        let spool = tempfile::NamedTempFile::new_in(dir).map_err(local)?;
        let mut file = tokio::fs::File::from_std(spool.reopen().map_err(local)?);
        let options = bollard::query_parameters::DownloadFromContainerOptions {
            path: path.to_owned(),
        };
        let mut stream = self.docker.download_from_container(name, Some(options));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(e))?;
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        drop(file);
        let (spool_path, out) = (spool.path().to_path_buf(), out.to_path_buf());
        let wanted = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || -> Result<u64, BackendError> {
            let local =
                |e: std::io::Error| BackendError::Local(format!("`{}`: {e}", out.display()));
            let mut archive = tar::Archive::new(std::fs::File::open(&spool_path).map_err(local)?);
            for entry in archive.entries().map_err(local)? {
                let mut entry = entry.map_err(local)?;
                let is_it = entry
                    .path()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .is_some_and(|n| n == wanted);
                if is_it && entry.header().entry_type().is_file() {
                    let mut target = std::fs::File::create(&out).map_err(local)?;
                    let copied = std::io::copy(&mut entry, &mut target).map_err(local)?;
                    target.sync_all().map_err(local)?;
                    return Ok(copied);
                }
            }
            Err(BackendError::Command(format!(
                "`{wanted}` is not a file in the container"
            )))
        })
        .await
        .map_err(|e| BackendError::Local(e.to_string()))?
    }

    /// Copies the local file `file` into directory `dir` of container `name` through the
    /// Engine's archive API (what `docker cp` does), streamed from a tar spooled beside
    /// `file`; the path it has in the container.
    pub async fn copy_file_in(
        &self,
        name: &str,
        dir: &str,
        file: &Path,
    ) -> Result<String, BackendError> {
        let local = |e: std::io::Error| BackendError::Local(format!("`{}`: {e}", file.display()));
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| BackendError::Local(format!("`{}` is not a file", file.display())))?;
        let spool = tempfile::NamedTempFile::new_in(file.parent().unwrap_or(Path::new(".")))
            .map_err(local)?;
        let (source, archive, entry) = (
            file.to_path_buf(),
            spool.reopen().map_err(local)?,
            file_name.clone(),
        );
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut builder = tar::Builder::new(archive);
            builder.append_path_with_name(&source, &entry)?;
            builder.into_inner()?.sync_all()
        })
        .await
        .map_err(|e| BackendError::Local(e.to_string()))?
        .map_err(local)?;
        let stream = tokio_util::io::ReaderStream::new(
            tokio::fs::File::open(spool.path()).await.map_err(local)?,
        );
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path(dir)
            .build();
        self.docker
            .upload_to_container(name, Some(options), bollard::body_try_stream(stream))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(format!("{}/{file_name}", dir.trim_end_matches('/')))
    }

    /// The engine host's total memory, in bytes (Engine info `MemTotal`).
    pub async fn host_memory(&self) -> Result<f64, BackendError> {
        let info = self.docker.info().await.map_err(|e| self.failed(e))?;
        Ok(info.mem_total.unwrap_or(0) as f64)
    }

    /// Names of the containers matching `selection` (sorted).
    pub async fn matching_names(&self, selection: &Selection) -> Result<Vec<String>, BackendError> {
        let mut filters = std::collections::HashMap::new();
        if !selection.labels.is_empty() {
            filters.insert(
                "label".to_owned(),
                selection
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(state) = &selection.state {
            filters.insert("status".to_owned(), vec![state.clone()]);
        }
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.failed(e))?;
        let mut names: Vec<String> = summaries
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_owned())
            .filter(|n| selection.name.as_ref().is_none_or(|re| re.is_match(n)))
            // Originals a recreate parked are redis-move's own until the run ends: no
            // selection sees them (a `^fiskai-worker` pattern would match them too).
            .filter(|n| !change::is_parked(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The matching containers, each as an object (see the `docker.containers` docs);
    /// environment values are passed through `redactor`.
    pub async fn containers(
        &self,
        selection: &Selection,
        redactor: &Redactor,
    ) -> Result<Value, BackendError> {
        let names = self.matching_names(selection).await?;
        let inspected = futures_util::future::try_join_all(names.iter().map(|name| async move {
            match self
                .docker
                .inspect_container(name, None::<InspectContainerOptions>)
                .await
            {
                Ok(c) => Ok(Some(c)),
                // Gone since it was listed (replaced by a recreate meanwhile).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(self.failed(e)),
            }
        }))
        .await?;
        Ok(Value::List(
            inspected
                .into_iter()
                .flatten()
                .map(|c| container_value(c, redactor))
                .collect(),
        ))
    }

    /// Log lines of the matching containers that match `pattern`, as `{container, line}`.
    pub async fn logs(
        &self,
        selection: &Selection,
        pattern: Option<&Regex>,
        since: Option<i64>,
        tail: Option<u32>,
        redactor: &Redactor,
    ) -> Result<Value, BackendError> {
        let names = self.matching_names(selection).await?;
        // All containers at once: a probe over 14 workers must fit its timeout.
        let texts = futures_util::future::try_join_all(names.iter().map(|name| async move {
            let mut options = LogsOptionsBuilder::default().stdout(true).stderr(true);
            if let Some(since) = since {
                options = options.since(since as i32);
            }
            if let Some(tail) = tail {
                options = options.tail(&tail.to_string());
            }
            let chunks: Vec<_> = match self
                .docker
                .logs(name, Some(options.build()))
                .try_collect()
                .await
            {
                Ok(chunks) => chunks,
                // Gone since it was listed (replaced by a recreate meanwhile).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Vec::new(),
                Err(e) => return Err(self.failed(e)),
            };
            Ok(chunks
                .iter()
                .map(|c| String::from_utf8_lossy(&c.clone().into_bytes()).into_owned())
                .collect::<String>())
        }))
        .await?;
        let mut lines = Vec::new();
        for (name, text) in names.iter().zip(texts) {
            for line in text.lines() {
                if pattern.is_none_or(|re| re.is_match(line)) {
                    let mut item = BTreeMap::new();
                    item.insert("container".to_owned(), Value::Text(name.clone()));
                    item.insert("line".to_owned(), Value::Text(redactor.redact(line)));
                    lines.push(Value::Object(item));
                }
            }
        }
        Ok(Value::List(lines))
    }

    /// Images whose tags match `name`, as `{id, tags, created, size}`.
    pub async fn images(&self, name: Option<&Regex>) -> Result<Value, BackendError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
            .await
            .map_err(|e| self.failed(e))?;
        let mut out = Vec::new();
        for image in images {
            if let Some(re) = name
                && !image.repo_tags.iter().any(|t| re.is_match(t))
            {
                continue;
            }
            let mut item = BTreeMap::new();
            item.insert("id".into(), Value::Text(image.id.clone()));
            item.insert(
                "tags".into(),
                Value::List(image.repo_tags.iter().cloned().map(Value::Text).collect()),
            );
            item.insert("created".into(), timestamp(image.created));
            item.insert("size".into(), Value::Number(image.size as f64));
            out.push(Value::Object(item));
        }
        Ok(Value::List(out))
    }

    /// Volumes whose names match `name`, as `{name, driver, mountpoint, created}`.
    pub async fn volumes(&self, name: Option<&Regex>) -> Result<Value, BackendError> {
        let response = self
            .docker
            .list_volumes(None::<ListVolumesOptions>)
            .await
            .map_err(|e| self.failed(e))?;
        let mut out = Vec::new();
        for volume in response.volumes.unwrap_or_default() {
            if name.is_some_and(|re| !re.is_match(&volume.name)) {
                continue;
            }
            let mut item = BTreeMap::new();
            item.insert("name".into(), Value::Text(volume.name));
            item.insert("driver".into(), Value::Text(volume.driver));
            item.insert("mountpoint".into(), Value::Text(volume.mountpoint));
            item.insert(
                "created".into(),
                volume
                    .created_at
                    .and_then(|c| c.parse::<jiff::Timestamp>().ok())
                    .map(Value::Timestamp)
                    .unwrap_or(Value::Null),
            );
            out.push(Value::Object(item));
        }
        Ok(Value::List(out))
    }

    /// Waits until every matching container is healthy (or running, without a health
    /// check). Fails at `timeout` with the containers that are not.
    pub async fn wait_healthy(
        &self,
        selection: &Selection,
        timeout: Duration,
        redactor: &Redactor,
    ) -> Result<Value, BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let containers = self.containers(selection, redactor).await?;
            let Value::List(items) = &containers else {
                return Ok(containers);
            };
            let waiting: Vec<String> = items
                .iter()
                .filter(|c| {
                    let health = c.field("health").map(Value::as_text).unwrap_or_default();
                    let state = c.field("state").map(Value::as_text).unwrap_or_default();
                    !(health == "healthy" || (health == "none" && state == "running"))
                })
                .map(|c| {
                    format!(
                        "{} ({}, {})",
                        text(c, "name"),
                        text(c, "state"),
                        text(c, "health")
                    )
                })
                .collect();
            if items.is_empty() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(BackendError::Timeout("no container matches".into()));
                }
            } else if waiting.is_empty() {
                return Ok(containers);
            } else if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Timeout(format!(
                    "not healthy: {}",
                    waiting.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn text(value: &Value, field: &str) -> String {
    value.field(field).map(Value::as_text).unwrap_or_default()
}

fn timestamp(unix_seconds: i64) -> Value {
    jiff::Timestamp::from_second(unix_seconds)
        .map(Value::Timestamp)
        .unwrap_or(Value::Null)
}

/// One inspected container as the value `docker.containers` yields.
pub fn container_value(c: bollard::models::ContainerInspectResponse, redactor: &Redactor) -> Value {
    let mut item = BTreeMap::new();
    let state = c.state.as_ref();
    item.insert(
        "name".into(),
        Value::Text(
            c.name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
        ),
    );
    item.insert("id".into(), Value::Text(c.id.clone().unwrap_or_default()));
    item.insert(
        "state".into(),
        Value::Text(
            state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_default(),
        ),
    );
    item.insert(
        "health".into(),
        Value::Text(
            state
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status)
                .map(|h| h.to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "none".into()),
        ),
    );
    item.insert(
        "exit_code".into(),
        Value::Number(state.and_then(|s| s.exit_code).unwrap_or(0) as f64),
    );
    let config = c.config.as_ref();
    item.insert(
        "image".into(),
        Value::Text(config.and_then(|c| c.image.clone()).unwrap_or_default()),
    );
    item.insert(
        "created".into(),
        c.created
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(Value::Timestamp)
            .unwrap_or(Value::Null),
    );
    item.insert(
        "mounts".into(),
        Value::List(
            c.mounts
                .iter()
                .flatten()
                .map(|m| {
                    Value::Text(format!(
                        "{}:{}",
                        m.source.clone().unwrap_or_default(),
                        m.destination.clone().unwrap_or_default()
                    ))
                })
                .collect(),
        ),
    );
    item.insert(
        "env".into(),
        Value::List(
            config
                .and_then(|c| c.env.clone())
                .unwrap_or_default()
                .iter()
                .map(|e| Value::Text(redact_env(e, redactor)))
                .collect(),
        ),
    );
    let mut networks: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    item.insert(
        "networks".into(),
        Value::List(networks.into_iter().map(Value::Text).collect()),
    );
    item.insert(
        "labels".into(),
        Value::Object(
            config
                .and_then(|c| c.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Value::Text(v)))
                .collect(),
        ),
    );
    item.insert(
        "restart_count".into(),
        Value::Number(c.restart_count.unwrap_or(0) as f64),
    );
    Value::Object(item)
}

/// An environment entry with known secrets masked, and the value of any variable whose
/// name says it is sensitive (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*KEY*`).
pub fn redact_env(entry: &str, redactor: &Redactor) -> String {
    match entry.split_once('=') {
        Some((key, _))
            if ["PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL"]
                .iter()
                .any(|s| key.to_ascii_uppercase().contains(s)) =>
        {
            format!("{key}={}", crate::redact::MASK)
        }
        _ => redactor.redact(entry),
    }
}

/// A bollard error in words: the engine's own message, or why it could not be reached.
pub fn docker_error(endpoint: &str, e: bollard::errors::Error) -> BackendError {
    use bollard::errors::Error;
    match e {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => BackendError::Command(format!(
            "Docker engine at {endpoint} answered {status_code}: {}",
            message.trim()
        )),
        Error::RequestTimeoutError => BackendError::Timeout(format!(
            "Docker engine at {endpoint} did not answer in time"
        )),
        other => {
            // The causes say what happened (a refused certificate, a closed connection);
            // the error itself often says only that the request failed.
            let mut message = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                source = cause.source();
            }
            BackendError::Unreachable(format!("Docker engine at {endpoint}: {message}"))
        }
    }
}

/// Drains a stream, ignoring items (used to wait for pulls and imports).
pub async fn drain<S, T, E>(stream: S) -> Result<(), E>
where
    S: futures_util::Stream<Item = Result<T, E>>,
{
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        item?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_environment_values_are_masked() {
        let mut redactor = Redactor::default();
        redactor.add("declared-secret");
        assert_eq!(
            redact_env("REDIS_PASSWORD=plain", &redactor),
            "REDIS_PASSWORD=****"
        );
        assert_eq!(redact_env("API_TOKEN=abc", &redactor), "API_TOKEN=****");
        assert_eq!(
            redact_env("REDIS_URL=redis://:pw@h:6379", &redactor),
            "REDIS_URL=redis://:****@h:6379"
        );
        assert_eq!(redact_env("NOTE=declared-secret", &redactor), "NOTE=****");
        assert_eq!(redact_env("MODE=fast", &redactor), "MODE=fast");
    }
}
