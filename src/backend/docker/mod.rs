//! The Docker Engine via bollard: one client per target (unix socket, tcp, TLS, or the
//! `DOCKER_HOST`/`DOCKER_CERT_PATH`/`DOCKER_TLS_VERIFY` defaults), API version
//! negotiated, and the container, log, image and volume operations of the actions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    ListVolumesOptions, LogsOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use regex::Regex;

use crate::backend::BackendError;
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

/// Where and how to reach one Docker Engine, every value resolved. A `None` host or TLS
/// falls back to Docker's own environment (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`,
/// `DOCKER_CERT_PATH`), then the local socket.
#[derive(Clone, Debug)]
pub struct DockerEndpoint {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`.
    pub host: Option<String>,
    /// Client key, certificate and CA for TLS over TCP.
    pub tls: Option<DockerTlsFiles>,
    /// Time limit of one API request.
    pub timeout: Duration,
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

impl Default for DockerEndpoint {
    fn default() -> Self {
        DockerEndpoint {
            host: None,
            tls: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl DockerBackend {
    /// Connects to `endpoint` (Docker's environment defaults where it says nothing).
    pub async fn connect(endpoint: &DockerEndpoint) -> Result<Self, BackendError> {
        let timeout = endpoint.timeout;
        let host = match &endpoint.host {
            Some(host) => Some(host.clone()),
            None => std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
        };
        let tls_files: Option<(PathBuf, PathBuf, PathBuf)> = match &endpoint.tls {
            Some(tls) => Some((tls.key.clone(), tls.cert.clone(), tls.ca.clone())),
            None if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0") => {
                let dir = std::env::var("DOCKER_CERT_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| {
                        std::env::var("HOME")
                            .map(|h| PathBuf::from(h).join(".docker"))
                            .unwrap_or_default()
                    });
                Some((
                    dir.join("key.pem"),
                    dir.join("cert.pem"),
                    dir.join("ca.pem"),
                ))
            }
            None => None,
        };
        let secs = timeout.as_secs().max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let (docker, endpoint) = match host.as_deref() {
            None => (
                Docker::connect_with_unix("/var/run/docker.sock", secs, version),
                "unix:///var/run/docker.sock".to_owned(),
            ),
            Some(h) if h.starts_with("unix://") => {
                (Docker::connect_with_unix(h, secs, version), h.to_owned())
            }
            Some(h)
                if h.starts_with("tcp://")
                    || h.starts_with("http://")
                    || h.starts_with("https://") =>
            {
                match &tls_files {
                    Some((key, cert, ca)) => (
                        Docker::connect_with_ssl(h, key, cert, ca, secs, version),
                        format!("{h} (TLS)"),
                    ),
                    None => (Docker::connect_with_http(h, secs, version), h.to_owned()),
                }
            }
            Some(h) => {
                return Err(BackendError::Config(format!(
                    "Docker host `{h}` is not supported by this build (use unix:// or tcp://; for ssh, forward the socket with `ssh -L`)"
                )));
            }
        };
        let docker =
            docker.map_err(|e| BackendError::Config(format!("Docker endpoint {endpoint}: {e}")))?;
        // Negotiation talks to the engine; an unreachable engine is reported by the first
        // real request instead, with the action's context.
        let docker = match docker.clone().negotiate_version().await {
            Ok(negotiated) => negotiated,
            Err(_) => docker,
        };
        Ok(DockerBackend { docker, endpoint })
    }

    /// The bollard client (for the executor's mutating operations).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| docker_error(&self.endpoint, e))
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
            let chunk = chunk.map_err(|e| docker_error(&self.endpoint, e))?;
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
            .map_err(|e| docker_error(&self.endpoint, e))?;
        Ok(format!("{}/{file_name}", dir.trim_end_matches('/')))
    }

    /// The engine host's total memory, in bytes (Engine info `MemTotal`).
    pub async fn host_memory(&self) -> Result<f64, BackendError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| docker_error(&self.endpoint, e))?;
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
            .map_err(|e| docker_error(&self.endpoint, e))?;
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
                Err(e) => Err(docker_error(&self.endpoint, e)),
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
                Err(e) => return Err(docker_error(&self.endpoint, e)),
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
            .map_err(|e| docker_error(&self.endpoint, e))?;
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
            .map_err(|e| docker_error(&self.endpoint, e))?;
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
        other => BackendError::Unreachable(format!("Docker engine at {endpoint}: {other}")),
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
