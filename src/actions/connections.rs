//! Connections to a runbook's targets, opened lazily and once per target. A target's
//! templates (URL, password, TLS files, Docker host) are resolved here, so that the
//! backends receive plain endpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use super::resolve::Resolver;
use super::runner::ActionError;
use crate::backend::BackendError;
use crate::backend::cluster::{ClusterSettings, DEFAULT_SETTLE};
use crate::backend::docker::{DockerBackend, DockerEndpoint, DockerTlsFiles, SshOptions};
use crate::backend::redis::{self, RedisBackend, RedisEndpoint, TlsMaterial};
use crate::backend::sentinel::SentinelSettings;
use crate::backend::ssh::{SshSession, SshSessions};
use crate::runbook::action::TargetKind;
use crate::runbook::model::{Runbook, Target};
use crate::runbook::spec::{DockerTargetSpec, RedisTargetSpec, TargetSpec};
use crate::runbook::template::Template;

/// A Redis target's connection, and the SSH connection it goes through with that
/// connection's generation when it was made.
type CachedRedis = (RedisBackend, Option<(std::sync::Arc<SshSession>, u64)>);

/// Lazily opened connections to a runbook's targets.
pub struct Connections {
    targets: HashMap<String, Target>,
    base_dir: PathBuf,
    /// Each Redis target's connection, with the SSH connection it goes through (and
    /// that connection's generation when it was made) when it has one.
    redis: Mutex<HashMap<String, CachedRedis>>,
    docker: Mutex<HashMap<Option<String>, DockerBackend>>,
    ssh: SshSessions,
    /// The syncs running in the background of the run.
    pub syncs: super::sync::background::Syncs,
}

impl Connections {
    /// Connections for `runbook`'s targets (nothing is opened yet).
    pub fn new(runbook: &Runbook) -> Self {
        Connections {
            targets: runbook
                .targets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            base_dir: runbook
                .source
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            redis: Mutex::new(HashMap::new()),
            docker: Mutex::new(HashMap::new()),
            ssh: SshSessions::default(),
            syncs: Default::default(),
        }
    }

    /// The kind of a target.
    pub fn kind(&self, target: &str) -> Option<TargetKind> {
        self.targets.get(target).map(|t| t.kind)
    }

    /// The runbook's directory (relative paths in the runbook are relative to it).
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    fn redis_spec(&self, target: &str) -> Result<&RedisTargetSpec, ActionError> {
        match self.targets.get(target).map(|t| &t.spec) {
            Some(TargetSpec::Redis(spec)) => Ok(spec),
            _ => Err(ActionError::config(format!(
                "`{target}` is not a redis target"
            ))),
        }
    }

    /// The Redis connection of `target`.
    pub async fn redis(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
    ) -> Result<RedisBackend, ActionError> {
        let cached = self.redis.lock().await.get(target).cloned();
        // Behind Sentinel: the connection follows the primary they report now.
        let cached = match (cached, &self.redis_spec(target)?.sentinel) {
            (Some((backend, tunnel)), Some(_)) => {
                let endpoint = self.redis_endpoint(self.redis_spec(target)?, resolver)?;
                let primary = match &endpoint.sentinel {
                    Some(settings) => Some(
                        crate::backend::sentinel::Sentinels::connect(
                            settings,
                            endpoint.connect_timeout,
                        )
                        .await?
                        .primary()
                        .await?,
                    ),
                    None => None,
                };
                (backend.address == primary).then_some((backend, tunnel))
            }
            (cached, _) => cached,
        };
        if let Some((backend, tunnel)) = cached {
            match tunnel {
                None => return Ok(backend),
                // Through SSH: a connection made before the SSH connection was lost
                // and opened again is dead; make a new one instead of failing once.
                Some((session, generation)) => {
                    session.ensure_open().await?;
                    if session.generation() == generation {
                        return Ok(backend);
                    }
                }
            }
        }
        let (endpoint, tunnel) = self.routed_endpoint(target, resolver).await?;
        let backend = connect_redis(&endpoint, tunnel.as_ref()).await?;
        let through = tunnel.map(|t| {
            let generation = t.session.generation();
            (t.session, generation)
        });
        self.redis
            .lock()
            .await
            .insert(target.to_owned(), (backend.clone(), through));
        Ok(backend)
    }

    /// `count` separate connections to `target` (the shared one first), for work that
    /// spreads over several connections (a key copy).
    pub async fn redis_pool(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
        count: usize,
    ) -> Result<Vec<RedisBackend>, ActionError> {
        let mut pool = vec![self.redis(target, resolver).await?];
        for _ in 1..count.max(1) {
            pool.push(self.redis_dedicated(target, resolver).await?);
        }
        Ok(pool)
    }

    /// A connection to `target` of its own (not the one steps share), for work that
    /// runs alongside the steps (a sync in the background).
    pub async fn redis_dedicated(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
    ) -> Result<RedisBackend, ActionError> {
        let (endpoint, tunnel) = self.routed_endpoint(target, resolver).await?;
        connect_redis(&endpoint, tunnel.as_ref()).await
    }

    /// The Docker Engine and container a Redis target runs in, when its target says.
    pub async fn container_of(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
    ) -> Result<Option<(DockerBackend, String)>, ActionError> {
        let Some(container) = &self.redis_spec(target)?.container else {
            return Ok(None);
        };
        let docker = self
            .docker(
                container.docker.as_ref().map(|d| d.value.as_str()),
                resolver,
            )
            .await?;
        Ok(Some((docker, resolver.resolve(&container.name)?)))
    }

    /// What the backend needs to reach the Redis target `target` (through its SSH host's
    /// forward, when it names one).
    pub async fn endpoint_of(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
    ) -> Result<RedisEndpoint, ActionError> {
        Ok(self.routed_endpoint(target, resolver).await?.0)
    }

    /// The endpoint of Redis target `target` as redis-move dials it: with `via:` an SSH
    /// host, the URL points at a loopback port forwarded through that host's connection
    /// (returned too, for its error messages).
    async fn routed_endpoint(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
    ) -> Result<(RedisEndpoint, Option<Tunnel>), ActionError> {
        let spec = self.redis_spec(target)?;
        let mut endpoint = self.redis_endpoint(spec, resolver)?;
        let Some(via) = &spec.via else {
            return Ok((endpoint, None));
        };
        let docker = match self.targets.get(&via.value).map(|t| &t.spec) {
            Some(TargetSpec::Docker(docker)) => self.docker_endpoint(docker, resolver)?,
            _ => {
                return Err(ActionError::config(format!(
                    "`via: {}` of `{target}` is not a docker target",
                    via.value
                )));
            }
        };
        let Some(destination) = docker.ssh_destination()? else {
            // The host of the local engine: its addresses are this machine's.
            return Ok((endpoint, None));
        };
        let session = self.ssh.get(&destination).await?;
        let address = endpoint.tcp_address()?;
        let socket = session.forward(&address).await?;
        endpoint.dial_through(socket, &session.destination().url())?;
        Ok((endpoint, Some(Tunnel { session, address })))
    }

    /// What the backend needs to reach the Redis target of `spec`.
    pub fn redis_endpoint(
        &self,
        spec: &RedisTargetSpec,
        resolver: &Resolver<'_>,
    ) -> Result<RedisEndpoint, ActionError> {
        let read = |file: Option<&Template>| -> Result<Option<Vec<u8>>, ActionError> {
            match resolver.resolve_opt(file)? {
                Some(path) => std::fs::read(self.base_dir.join(&path))
                    .map(Some)
                    .map_err(|e| {
                        ActionError::config(format!("cannot read TLS file `{path}`: {e}"))
                    }),
                None => Ok(None),
            }
        };
        let tls = match &spec.tls {
            Some(tls) => Some(TlsMaterial {
                ca: read(tls.ca.as_ref())?,
                cert: read(tls.cert.as_ref())?,
                key: read(tls.key.as_ref())?,
            }),
            None => None,
        };
        Ok(RedisEndpoint {
            url: resolver.resolve(&spec.url.value)?,
            username: resolver.resolve_opt(spec.username.as_ref())?,
            password: resolver.resolve_opt(spec.password.as_ref())?,
            db: spec.db,
            tls,
            insecure: spec.tls.as_ref().is_some_and(|t| t.insecure),
            timeout: spec.timeout.map_or(redis::DEFAULT_TIMEOUT, |t| t.0),
            connect_timeout: spec.connect_timeout.map_or(redis::DEFAULT_TIMEOUT, |t| t.0),
            through: None,
            dial: None,
            cluster: match spec.cluster.as_ref().and_then(|c| c.fields()) {
                Some(fields) => Some(ClusterSettings {
                    seeds: fields
                        .seeds
                        .iter()
                        .map(|seed| resolver.resolve(seed))
                        .collect::<Result<_, _>>()?,
                    settle: fields.settle.map_or(DEFAULT_SETTLE, |t| t.0),
                }),
                None => None,
            },
            sentinel: match &spec.sentinel {
                Some(sentinel) => Some(SentinelSettings {
                    addresses: sentinel
                        .addresses
                        .iter()
                        .map(|address| resolver.resolve(address))
                        .collect::<Result<_, _>>()?,
                    master: resolver.resolve(&sentinel.master)?,
                    password: resolver.resolve_opt(sentinel.password.as_ref())?,
                }),
                None => None,
            },
        })
    }

    /// The Docker client of `target` (`None`: the default endpoint).
    pub async fn docker(
        &self,
        target: Option<&str>,
        resolver: &Resolver<'_>,
    ) -> Result<DockerBackend, ActionError> {
        let key = target.map(str::to_owned);
        if let Some(existing) = self.docker.lock().await.get(&key) {
            return Ok(existing.clone());
        }
        let endpoint = match target {
            Some(name) => match self.targets.get(name).map(|t| &t.spec) {
                Some(TargetSpec::Docker(spec)) => self.docker_endpoint(spec, resolver)?,
                _ => {
                    return Err(ActionError::config(format!(
                        "`{name}` is not a docker target"
                    )));
                }
            },
            None => DockerEndpoint::default(),
        };
        let backend = DockerBackend::connect(&endpoint, &self.ssh).await?;
        self.docker.lock().await.insert(key, backend.clone());
        Ok(backend)
    }

    fn docker_endpoint(
        &self,
        spec: &DockerTargetSpec,
        resolver: &Resolver<'_>,
    ) -> Result<DockerEndpoint, ActionError> {
        let tls = match &spec.tls {
            Some(tls) => Some(DockerTlsFiles {
                key: self.base_dir.join(resolver.resolve(&tls.key)?),
                cert: self.base_dir.join(resolver.resolve(&tls.cert)?),
                ca: self.base_dir.join(resolver.resolve(&tls.ca)?),
            }),
            None => None,
        };
        // An empty file name is ssh's own default (a vars file that names no key); `~/`
        // is the home directory, as in ssh's own settings.
        let file = |template: Option<&Template>| -> Result<Option<PathBuf>, ActionError> {
            Ok(resolver
                .resolve_opt(template)?
                .filter(|path| !path.is_empty())
                .map(
                    |path| match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
                        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
                        _ => self.base_dir.join(path),
                    },
                ))
        };
        let ssh = match &spec.ssh {
            Some(ssh) => SshOptions {
                identity: file(ssh.identity.as_ref())?,
                known_hosts: file(ssh.known_hosts.as_ref())?,
                connect_timeout: ssh.connect_timeout.map(|t| t.0),
            },
            None => SshOptions::default(),
        };
        Ok(DockerEndpoint {
            host: resolver.resolve_opt(spec.host.as_ref().map(|h| &h.value))?,
            context: spec.context.as_ref().map(|c| c.value.clone()),
            tls,
            ssh,
            timeout: spec
                .timeout
                .map_or(crate::backend::docker::DEFAULT_TIMEOUT, |t| t.0),
        })
    }
}

/// A Redis reached through an SSH host: the connection, and the address as the host
/// sees it.
struct Tunnel {
    session: std::sync::Arc<SshSession>,
    address: String,
}

/// Connects to a Redis endpoint; through an SSH tunnel, a failure says what the host
/// could not reach, and what ssh said of it.
async fn connect_redis(
    endpoint: &RedisEndpoint,
    tunnel: Option<&Tunnel>,
) -> Result<RedisBackend, ActionError> {
    let mark = tunnel.map_or(0, |t| t.session.forward_error_mark());
    match RedisBackend::connect(endpoint).await {
        Ok(backend) => Ok(backend),
        Err(e) => {
            let Some(Tunnel { session, address }) = tunnel else {
                return Err(e.into());
            };
            if let Some(why) = session.recent_reopen_failure() {
                return Err(why.into());
            }
            let through = session.destination().url();
            let message = match session.forward_error_since(mark) {
                Some(said) if said.contains("administratively prohibited") => format!(
                    "{through} refuses to forward connections (sshd's AllowTcpForwarding, or no-port-forwarding on the key), so {address} cannot be reached through it: ssh said `{said}`"
                ),
                Some(said) => format!(
                    "{through} could not open a connection to {address} (nothing listens there, or the host cannot reach it): ssh said `{said}`"
                ),
                None => {
                    let inner = match e {
                        BackendError::Unreachable(m) => m,
                        other => other.to_string(),
                    };
                    format!("{address} through {through}: {inner}")
                }
            };
            Err(ActionError::Backend(BackendError::Unreachable(message)))
        }
    }
}
