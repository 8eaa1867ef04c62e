//! Docker operations that change things: stop, start, restart, recreate (with a
//! changed environment or image, everything else kept), remove, run (with files
//! uploaded before start, or as a one-off), exec. Each works on several containers in
//! parallel and reports exactly which it changed, for rollback.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, NetworkConnectRequest,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    RestartContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};

use super::DockerBackend;
use crate::backend::BackendError;

/// The result of a command run in a container: exit code and output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommandOutput {
    /// Exit code.
    pub exit_code: i64,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// What `docker.run` creates.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// Container name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Command.
    pub cmd: Vec<String>,
    /// Environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Binds and volumes (`source:destination[:ro]`).
    pub volumes: Vec<String>,
    /// Published ports (`[ip:]host:container`).
    pub ports: Vec<String>,
    /// Restart policy name.
    pub restart: Option<String>,
    /// Health check command (run without a shell).
    pub healthcheck: Option<HealthSpec>,
    /// Networks.
    pub networks: Vec<String>,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Files written before start: absolute path -> content.
    pub files: Vec<(String, String)>,
    /// Pull policy: `missing`, `always`, `never`.
    pub pull: String,
}

/// A health check.
#[derive(Clone, Debug, Default)]
pub struct HealthSpec {
    /// Command.
    pub test: Vec<String>,
    /// Interval.
    pub interval: Option<Duration>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Retries.
    pub retries: Option<u32>,
    /// Start period.
    pub start_period: Option<Duration>,
}

fn nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// What a parked container's name carries before the original's short id.
const PARKED_MARK: &str = "rmold-";

/// Whether `name` is the name of an original container a recreate parked.
pub fn is_parked(name: &str) -> bool {
    name.rsplit_once('-').is_some_and(|(rest, id)| {
        rest.ends_with("-rmold") && id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

impl DockerBackend {
    async fn inspect(&self, name: &str) -> Result<ContainerInspectResponse, BackendError> {
        self.client()
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Whether a container is running.
    pub async fn is_running(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self
            .inspect(name)
            .await?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false))
    }

    /// Stops the named containers in parallel (each with `grace` before SIGKILL).
    pub async fn stop(
        &self,
        names: &[String],
        grace: Option<Duration>,
    ) -> Result<(), BackendError> {
        let options = StopContainerOptionsBuilder::default();
        let options = match grace {
            Some(g) => options.t(g.as_secs().min(i32::MAX as u64) as i32),
            None => options,
        }
        .build();
        futures_util::future::try_join_all(names.iter().map(|n| {
            let options = options.clone();
            async move {
                match self.client().stop_container(n, Some(options)).await {
                    Ok(()) => Ok(()),
                    // 304: already stopped.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 304,
                        ..
                    }) => Ok(()),
                    Err(e) => Err(self.failed(e)),
                }
            }
        }))
        .await
        .map(|_| ())
    }

    /// Starts the named containers in parallel.
    pub async fn start(&self, names: &[String]) -> Result<(), BackendError> {
        futures_util::future::try_join_all(names.iter().map(|n| async move {
            match self
                .client()
                .start_container(n, None::<StartContainerOptions>)
                .await
            {
                Ok(()) => Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => Ok(()),
                Err(e) => Err(self.failed(e)),
            }
        }))
        .await
        .map(|_| ())
    }

    /// Restarts the named containers in parallel.
    pub async fn restart(
        &self,
        names: &[String],
        grace: Option<Duration>,
    ) -> Result<(), BackendError> {
        let options = RestartContainerOptionsBuilder::default();
        let options = match grace {
            Some(g) => options.t(g.as_secs().min(i32::MAX as u64) as i32),
            None => options,
        }
        .build();
        futures_util::future::try_join_all(names.iter().map(|n| {
            let options = options.clone();
            async move {
                self.client()
                    .restart_container(n, Some(options))
                    .await
                    .map_err(|e| self.failed(e))
            }
        }))
        .await
        .map(|_| ())
    }

    /// Removes the named containers (forced: running ones are killed). Missing ones are
    /// fine.
    pub async fn remove(&self, names: &[String], force: bool) -> Result<(), BackendError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(force)
            .build();
        futures_util::future::try_join_all(names.iter().map(|n| {
            let options = options.clone();
            async move {
                match self.client().remove_container(n, Some(options)).await {
                    Ok(()) => Ok(()),
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => Ok(()),
                    Err(e) => Err(self.failed(e)),
                }
            }
        }))
        .await
        .map(|_| ())
    }

    /// Removes a volume (missing is fine).
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<(), BackendError> {
        let options = bollard::query_parameters::RemoveVolumeOptionsBuilder::default()
            .force(force)
            .build();
        match self.client().remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The name a container is parked under while its replacement runs (it is kept,
    /// stopped, so that a rollback restores it exactly, secrets included, without the
    /// journal ever holding its configuration).
    pub fn parked_name(name: &str, id: &str) -> String {
        format!("{name}-{PARKED_MARK}{}", &id[..id.len().min(12)])
    }

    /// Parked names for the named containers as they are now.
    pub async fn park_plan(&self, names: &[String]) -> Result<Vec<(String, String)>, BackendError> {
        let mut plan = Vec::new();
        for name in names {
            let id = self.inspect(name).await?.id.unwrap_or_default();
            plan.push((name.clone(), Self::parked_name(name, &id)));
        }
        Ok(plan)
    }

    /// Whether a container exists.
    pub async fn exists(&self, name: &str) -> Result<bool, BackendError> {
        match self
            .client()
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Replaces each container of `plan` (name, parked name) by a copy with `env` set
    /// and `image` changed; everything else (host config, labels, networks) is kept. The
    /// old container is stopped and parked, not removed. A container that already has
    /// that environment and image is left alone; one already replaced (its parked copy
    /// exists) is not replaced twice. In parallel; returns the names replaced now.
    pub async fn recreate_all(
        &self,
        plan: &[(String, String)],
        env: &[(String, String)],
        image: Option<&str>,
        grace: Option<Duration>,
    ) -> Result<Vec<String>, BackendError> {
        let results = futures_util::future::join_all(
            plan.iter()
                .map(|(name, parked)| self.recreate_one(name, parked, env, image, grace)),
        )
        .await;
        let mut changed = Vec::new();
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(Some(name)) => changed.push(name),
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            changed.sort();
            Ok(changed)
        } else {
            Err(BackendError::Command(errors.join("; ")))
        }
    }

    async fn recreate_one(
        &self,
        name: &str,
        parked: &str,
        env: &[(String, String)],
        image: Option<&str>,
        grace: Option<Duration>,
    ) -> Result<Option<String>, BackendError> {
        if self.exists(parked).await? {
            return Ok(None); // replaced by an earlier, interrupted attempt
        }
        let current = self.inspect(name).await?;
        let target = with_env(&current, env, image);
        let env_of = |c: &ContainerInspectResponse| {
            c.config
                .as_ref()
                .and_then(|c| c.env.clone())
                .unwrap_or_default()
        };
        let image_of = |c: &ContainerInspectResponse| {
            c.config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default()
        };
        if env_of(&current) == env_of(&target) && image_of(&current) == image_of(&target) {
            return Ok(None);
        }
        let was_running = current
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false);
        let old_id = current.id.clone().unwrap_or_default();
        self.stop(&[name.to_owned()], grace).await?;
        self.rename(name, parked).await?;
        match self.create_from(name, &target, &old_id).await {
            Ok(()) => Ok(Some(name.to_owned())),
            Err(e) => {
                // Put the old container back as it was.
                self.remove(&[name.to_owned()], true).await.ok();
                let _ = self.rename(parked, name).await;
                if was_running {
                    let _ = self.start(&[name.to_owned()]).await;
                }
                Err(BackendError::Command(format!(
                    "recreating `{name}` failed, the old container was restored: {e}"
                )))
            }
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), BackendError> {
        self.client()
            .rename_container(
                from,
                RenameContainerOptionsBuilder::default().name(to).build(),
            )
            .await
            .map_err(|e| self.failed(e))
    }

    /// Puts parked containers back: the replacement is removed and the original, exactly
    /// as it was, takes its name and starts, unless it is in `stopped` (it was not
    /// running before the recreate; whatever stopped it restarts it). In parallel;
    /// returns the names restored.
    pub async fn restore_all(
        &self,
        plan: &[(String, String)],
        stopped: &[String],
        grace: Option<Duration>,
    ) -> Result<Vec<String>, BackendError> {
        let results =
            futures_util::future::join_all(plan.iter().map(|(name, parked)| async move {
                if !self.exists(parked).await? {
                    return Ok(None); // never replaced
                }
                self.stop(std::slice::from_ref(name), grace).await.ok();
                self.remove(std::slice::from_ref(name), true).await?;
                self.rename(parked, name).await?;
                if !stopped.contains(name) {
                    self.start(std::slice::from_ref(name)).await?;
                }
                Ok::<_, BackendError>(Some(name.clone()))
            }))
            .await;
        let mut restored = Vec::new();
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(Some(name)) => restored.push(name),
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            restored.sort();
            Ok(restored)
        } else {
            Err(BackendError::Command(errors.join("; ")))
        }
    }

    /// Creates and starts `name` from an inspect result (config, host config, networks).
    async fn create_from(
        &self,
        name: &str,
        target: &ContainerInspectResponse,
        old_id: &str,
    ) -> Result<(), BackendError> {
        let config = target.config.clone().unwrap_or_default();
        let mut body: ContainerCreateBody = serde_json::to_value(&config)
            .and_then(serde_json::from_value)
            .map_err(|e| BackendError::Unexpected(format!("container configuration: {e}")))?;
        let host_config = target.host_config.clone();
        let network_mode = host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .unwrap_or_default();
        body.host_config = host_config;
        let networks: Vec<(String, EndpointSettings)> = target
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(net, settings)| {
                let short = &old_id[..old_id.len().min(12)];
                let aliases = settings.aliases.map(|a| {
                    a.into_iter()
                        .filter(|x| x != short && !old_id.starts_with(x.as_str()))
                        .collect()
                });
                (
                    net,
                    EndpointSettings {
                        aliases,
                        links: settings.links,
                        ipam_config: settings.ipam_config,
                        driver_opts: settings.driver_opts,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let (first, rest): (Vec<_>, Vec<_>) = networks
            .into_iter()
            .partition(|(net, _)| *net == network_mode);
        if let Some((net, settings)) = first.into_iter().next() {
            body.networking_config = Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(net, settings)])),
            });
        }
        self.client()
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                body,
            )
            .await
            .map_err(|e| self.failed(e))?;
        for (net, settings) in rest {
            self.client()
                .connect_network(
                    &net,
                    NetworkConnectRequest {
                        container: name.to_owned(),
                        endpoint_config: Some(settings),
                    },
                )
                .await
                .map_err(|e| self.failed(e))?;
        }
        self.start(&[name.to_owned()]).await
    }

    /// Creates a container from `spec`, uploads its files, starts it. With `one_off`,
    /// waits for it to exit, collects its output and removes it.
    pub async fn run(
        &self,
        spec: &RunSpec,
        one_off: bool,
    ) -> Result<Option<CommandOutput>, BackendError> {
        self.ensure_image(&spec.image, &spec.pull).await?;
        let mut port_bindings: HashMap<String, Option<Vec<bollard::models::PortBinding>>> =
            HashMap::new();
        let mut exposed = Vec::new();
        for port in &spec.ports {
            let parts: Vec<&str> = port.rsplitn(3, ':').collect();
            let (container, host, ip) = match parts.as_slice() {
                [c] => (*c, None, None),
                [c, h] => (*c, Some(*h), None),
                [c, h, ip] => (*c, Some(*h), Some(*ip)),
                _ => {
                    return Err(BackendError::Config(format!(
                        "port `{port}` is not `[ip:]host:container`"
                    )));
                }
            };
            let key = if container.contains('/') {
                container.to_owned()
            } else {
                format!("{container}/tcp")
            };
            exposed.push(key.clone());
            if let Some(host) = host {
                port_bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(bollard::models::PortBinding {
                        host_ip: ip.map(str::to_owned),
                        host_port: Some(host.to_owned()),
                    });
            }
        }
        let restart = spec
            .restart
            .as_deref()
            .map(|r| bollard::models::RestartPolicy {
                name: Some(match r {
                    "always" => bollard::models::RestartPolicyNameEnum::ALWAYS,
                    "unless-stopped" => bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED,
                    "on-failure" => bollard::models::RestartPolicyNameEnum::ON_FAILURE,
                    _ => bollard::models::RestartPolicyNameEnum::NO,
                }),
                maximum_retry_count: None,
            });
        let healthcheck = spec
            .healthcheck
            .as_ref()
            .map(|h| bollard::models::HealthConfig {
                test: Some(
                    std::iter::once("CMD".to_owned())
                        .chain(h.test.iter().cloned())
                        .collect(),
                ),
                interval: h.interval.map(nanos),
                timeout: h.timeout.map(nanos),
                retries: h.retries.map(i64::from),
                start_period: h.start_period.map(nanos),
                start_interval: None,
            });
        let host_config = bollard::models::HostConfig {
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: restart,
            network_mode: spec.networks.first().cloned(),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            healthcheck,
            host_config: Some(host_config),
            ..Default::default()
        };
        self.client()
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&spec.name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(|e| self.failed(e))?;
        for network in spec.networks.iter().skip(1) {
            self.client()
                .connect_network(
                    network,
                    NetworkConnectRequest {
                        container: spec.name.clone(),
                        endpoint_config: None,
                    },
                )
                .await
                .map_err(|e| self.failed(e))?;
        }
        if !spec.files.is_empty() {
            let archive = files_tar(&spec.files)?;
            self.client()
                .upload_to_container(
                    &spec.name,
                    Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                    bollard::body_full(archive.into()),
                )
                .await
                .map_err(|e| self.failed(e))?;
        }
        self.start(std::slice::from_ref(&spec.name)).await?;
        if !one_off {
            return Ok(None);
        }
        // A non-zero exit comes back as an error from the wait; the code is read below.
        let _ = self
            .client()
            .wait_container(&spec.name, None::<WaitContainerOptions>)
            .try_collect::<Vec<_>>()
            .await;
        let exit_code = self
            .inspect(&spec.name)
            .await?
            .state
            .and_then(|s| s.exit_code)
            .unwrap_or(-1);
        let (stdout, stderr) = self.output(&spec.name).await?;
        self.remove(std::slice::from_ref(&spec.name), true).await?;
        Ok(Some(CommandOutput {
            exit_code,
            stdout,
            stderr,
        }))
    }

    async fn output(&self, name: &str) -> Result<(String, String), BackendError> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let chunks: Vec<bollard::container::LogOutput> = self
            .client()
            .logs(name, Some(options))
            .try_collect()
            .await
            .map_err(|e| self.failed(e))?;
        Ok(split_output(chunks))
    }

    async fn ensure_image(&self, image: &str, pull: &str) -> Result<(), BackendError> {
        let present = self.client().inspect_image(image).await.is_ok();
        if present && pull != "always" {
            return Ok(());
        }
        if pull == "never" {
            return Err(BackendError::Command(format!(
                "image `{image}` is not on {} and `pull: never` is set",
                self.endpoint
            )));
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream = self.client().create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                return Err(BackendError::Command(format!(
                    "cannot pull `{image}` on {}: {e}. Is a registry reachable from that host? Load or build the image there, then use `pull: never`",
                    self.endpoint
                )));
            }
        }
        Ok(())
    }

    /// Runs a command in a running container.
    pub async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
        workdir: Option<&str>,
    ) -> Result<CommandOutput, BackendError> {
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            env: (!env.is_empty()).then(|| env.to_vec()),
            user: user.map(str::to_owned),
            working_dir: workdir.map(str::to_owned),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .client()
            .create_exec(container, options)
            .await
            .map_err(|e| self.failed(e))?;
        let started = self
            .client()
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| self.failed(e))?;
        let chunks = match started {
            bollard::exec::StartExecResults::Attached { output, .. } => output
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| self.failed(e))?,
            bollard::exec::StartExecResults::Detached => Vec::new(),
        };
        let (stdout, stderr) = split_output(chunks);
        let exit_code = self
            .client()
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| self.failed(e))?
            .exit_code
            .unwrap_or(-1);
        Ok(CommandOutput {
            exit_code,
            stdout,
            stderr,
        })
    }
}

fn split_output(chunks: Vec<bollard::container::LogOutput>) -> (String, String) {
    let mut stdout = String::new();
    let mut stderr = String::new();
    for chunk in chunks {
        match chunk {
            bollard::container::LogOutput::StdErr { message } => {
                stderr.push_str(&String::from_utf8_lossy(&message))
            }
            other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
        }
    }
    (stdout, stderr)
}

/// `config` with the environment variables of `changes` set (others kept) and the
/// image changed when given.
pub fn with_env(
    config: &ContainerInspectResponse,
    changes: &[(String, String)],
    image: Option<&str>,
) -> ContainerInspectResponse {
    let mut target = config.clone();
    if let Some(cfg) = target.config.as_mut() {
        let mut env = cfg.env.clone().unwrap_or_default();
        for (key, value) in changes {
            let entry = format!("{key}={value}");
            match env
                .iter_mut()
                .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key.as_str()) || *e == key)
            {
                Some(existing) => *existing = entry,
                None => env.push(entry),
            }
        }
        cfg.env = Some(env);
        if let Some(image) = image {
            cfg.image = Some(image.to_owned());
        }
    }
    target
}

/// A tar of `(absolute path, content)` files, for upload at `/`.
fn files_tar(files: &[(String, String)]) -> Result<Vec<u8>, BackendError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(jiff::Timestamp::now().as_second().max(0) as u64);
        builder
            .append_data(
                &mut header,
                path.trim_start_matches('/'),
                content.as_bytes(),
            )
            .map_err(|e| BackendError::Config(format!("file `{path}`: {e}")))?;
    }
    builder
        .into_inner()
        .map_err(|e| BackendError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_names_are_recognised() {
        let parked = DockerBackend::parked_name("fiskai-worker-ocr", "0123456789abcdef0123");
        assert_eq!(parked, "fiskai-worker-ocr-rmold-0123456789ab");
        assert!(is_parked(&parked));
        assert!(!is_parked("fiskai-worker-ocr"));
        assert!(!is_parked("my-rmold-app"));
        assert!(!is_parked("x-rmold-0123456789zz"));
    }
}
