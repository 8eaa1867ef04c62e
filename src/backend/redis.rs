//! Redis via the `redis` crate: connections built from a runbook target (redis://,
//! rediss://, unix sockets, ACL user and password, db index) with explicit connect and
//! response timeouts (the crate's 500 ms default cuts slow commands), and the read and
//! write operations the actions need.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, TlsCertificates};

use super::BackendError;
use super::cluster::{Cluster, ClusterSettings};
use crate::value::Value;

/// The name redis-move gives its connections (`CLIENT SETNAME`).
pub const OWN_NAME: &str = "redis-move";

/// One client of a server, as `CLIENT LIST` shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Client {
    /// Its fields (`id`, `addr`, `laddr`, `name`, `age`, `idle`, `flags`, `db`, `cmd`,
    /// `lib-name`, `lib-ver`, ...), as text.
    pub fields: BTreeMap<String, String>,
}

impl Client {
    /// A field, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// Whether it is a replica (or a monitor) of this server rather than a client.
    pub fn is_replica(&self) -> bool {
        let flags = self.get("flags");
        flags.contains('S') || flags.contains('M')
    }

    /// Whether it is one of redis-move's own connections.
    pub fn is_redis_move(&self) -> bool {
        self.get("name").starts_with(OWN_NAME) || self.get("lib-name") == OWN_NAME
    }
}

/// The clients of a `CLIENT LIST` reply, one a line.
pub fn parse_client_list(text: &str) -> Vec<Client> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| Client {
            fields: line
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
        .collect()
}

/// Whether a Redis URL asks for TLS.
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("valkeys://")
}

/// Default response timeout when the target sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one Redis target. Reconnects in the background after a failure; the
/// failed command itself is not retried (retries are the step's `retry:`).
#[derive(Clone)]
pub struct RedisBackend {
    connection: ConnectionManager,
    /// `host:port` redis-move connects to (for REPLICAOF when no other address is given).
    pub address: Option<String>,
    /// The ACL user, if any (for `masteruser`).
    pub username: Option<String>,
    /// The password, if any (for `masterauth`).
    pub password: Option<String>,
    /// The database the connection selected.
    pub db: i64,
    /// A cluster target: the router its commands go through (`None`: one server).
    cluster: Option<Arc<Cluster>>,
}

/// Where and how to reach one Redis server, every value resolved (the actions resolve
/// a runbook target into this; the backend knows nothing of templates).
#[derive(Clone, Default)]
pub struct RedisEndpoint {
    /// `redis://`, `rediss://` or `unix://` URL, perhaps with credentials and a db.
    pub url: String,
    /// ACL user name, when not in the URL.
    pub username: Option<String>,
    /// Password, when not in the URL.
    pub password: Option<String>,
    /// Database index, when not in the URL.
    pub db: Option<u32>,
    /// Certificates for TLS, when the target gives any.
    pub tls: Option<TlsMaterial>,
    /// Accept any certificate (test setups only).
    pub insecure: bool,
    /// Response timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The SSH host the URL's address is seen from, when redis-move reaches the server
    /// through a forward.
    pub through: Option<String>,
    /// The local end of that forward (a unix socket private to this user), dialed
    /// instead of the URL's address.
    pub dial: Option<std::path::PathBuf>,
    /// The URL is a node of a Redis Cluster: commands are routed by slot.
    pub cluster: Option<ClusterSettings>,
    /// The primary is the one these Sentinels report: the URL gives credentials only.
    pub sentinel: Option<super::sentinel::SentinelSettings>,
}

/// The flavor (`redis` or `valkey`) and version of a server, from its parsed INFO.
pub fn server_version_of(info: &BTreeMap<String, BTreeMap<String, Value>>) -> (String, String) {
    let server = info.get("server");
    let field = |name: &str| server.and_then(|s| s.get(name)).map(Value::as_text);
    match field("valkey_version") {
        Some(v) => ("valkey".to_owned(), v),
        None => (
            "redis".to_owned(),
            field("redis_version").unwrap_or_default(),
        ),
    }
}

/// PEM contents for a TLS connection.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// CA certificate to trust; `None`: the system roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate, for mutual TLS.
    pub cert: Option<Vec<u8>>,
    /// Client key, for mutual TLS.
    pub key: Option<Vec<u8>>,
}

impl RedisEndpoint {
    /// An endpoint for `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        RedisEndpoint {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_TIMEOUT,
            ..Default::default()
        }
    }
}

impl RedisEndpoint {
    /// This endpoint's credentials, TLS and timeouts for the server at `address`
    /// (`host:port`): a cluster node, a Sentinel's primary.
    pub fn at(&self, address: &str) -> Result<RedisEndpoint, BackendError> {
        let mut endpoint = self.clone();
        endpoint.url = super::cluster::node_url(&self.url, address)?;
        endpoint.cluster = None;
        endpoint.sentinel = None;
        Ok(endpoint)
    }

    /// `host:port` of the URL (port 6379 when it gives none). Nothing of the URL is
    /// echoed in an error: a password with an unescaped `@` or `/` would show in it.
    pub fn tcp_address(&self) -> Result<String, BackendError> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| BackendError::Config(format!("invalid Redis URL: {e}")))?;
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() && path.parse::<u32>().is_err() {
            return Err(BackendError::Config(
                "invalid Redis URL: only a db number may follow the host (a password with `@`, `/` or `:` must be percent-encoded)".into(),
            ));
        }
        match url.host() {
            Some(host) if !url.scheme().contains("unix") => Ok(match host {
                url::Host::Ipv6(ip) => format!("[{ip}]:{}", url.port().unwrap_or(6379)),
                host => format!("{host}:{}", url.port().unwrap_or(6379)),
            }),
            _ => Err(BackendError::Config(
                "a Redis unix socket cannot be reached through an SSH host; give its TCP address"
                    .into(),
            )),
        }
    }

    /// Dials `socket`, the local end of a forward through SSH host `through`, instead of
    /// the URL's address (credentials and db unchanged). TLS is refused through a
    /// forward: the SSH connection already encrypts the path, and the server's name
    /// could not be checked.
    pub fn dial_through(
        &mut self,
        socket: std::path::PathBuf,
        through: &str,
    ) -> Result<(), BackendError> {
        if is_tls_url(&self.url) {
            return Err(BackendError::Config(format!(
                "TLS through the SSH host {through} is not supported (the SSH connection already encrypts the path): use redis://"
            )));
        }
        self.dial = Some(socket);
        self.through = Some(through.to_owned());
        Ok(())
    }

    /// The connection settings of the URL, dialing the forward's socket when there is one.
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo, BackendError> {
        let mut url = self.url.clone();
        if self.insecure && !url.contains('#') {
            url.push_str("#insecure");
        }
        let info = url.as_str().into_connection_info().map_err(|e| {
            BackendError::Config(format!(
                "invalid Redis URL: {}",
                e.detail().unwrap_or("unrecognised form")
            ))
        })?;
        Ok(match &self.dial {
            Some(socket) => info.set_addr(redis::ConnectionAddr::Unix(socket.clone())),
            None => info,
        })
    }
}

impl RedisBackend {
    /// Connects to `endpoint` (to every node it needs, for a cluster).
    pub async fn connect(endpoint: &RedisEndpoint) -> Result<Self, BackendError> {
        match &endpoint.cluster {
            Some(settings) => {
                let cluster = Cluster::connect(endpoint, settings).await?;
                let mut first = cluster
                    .primaries()
                    .await?
                    .into_iter()
                    .next()
                    .map(|(_, node)| node)
                    .ok_or_else(|| BackendError::Command("the cluster serves no slot".into()))?;
                first.cluster = Some(cluster);
                Ok(first)
            }
            None => match &endpoint.sentinel {
                Some(settings) => {
                    let primary =
                        super::sentinel::Sentinels::connect(settings, endpoint.connect_timeout)
                            .await?
                            .primary()
                            .await?;
                    Self::connect_node(&endpoint.at(&primary)?).await
                }
                None => Self::connect_node(endpoint).await,
            },
        }
    }

    /// Connects to the one server of `endpoint`.
    pub(crate) async fn connect_node(endpoint: &RedisEndpoint) -> Result<Self, BackendError> {
        let mut info = endpoint.connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(password) = &endpoint.password {
            settings = settings.set_password(password.clone());
        }
        if let Some(username) = &endpoint.username {
            settings = settings.set_username(username.clone());
        }
        if let Some(db) = endpoint.db {
            settings = settings.set_db(i64::from(db));
        }
        // Named, so that CLIENT LIST can tell redis-move's connections apart (the library
        // name needs Redis 7.2+; the connection name is set below for older ones).
        settings = settings.set_lib_name("redis-move", env!("CARGO_PKG_VERSION"));
        let username = settings.username().map(str::to_owned);
        let password = settings.password().map(str::to_owned);
        let db = settings.db();
        info = info.set_redis_settings(settings);
        let address = match info.addr() {
            // Through a forward, the address dialed is a local port: never an address a
            // server could replicate from.
            _ if endpoint.through.is_some() => None,
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => Some(format!("{host}:{port}")),
            _ => None,
        };
        let client = match &endpoint.tls {
            Some(tls) if tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some() => {
                let client_tls = match (&tls.cert, &tls.key) {
                    (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
                        client_cert: client_cert.clone(),
                        client_key: client_key.clone(),
                    }),
                    (None, None) => None,
                    _ => {
                        return Err(BackendError::Config(
                            "TLS needs both `cert` and `key`".into(),
                        ));
                    }
                };
                redis::Client::build_with_tls(
                    info,
                    TlsCertificates {
                        client_tls,
                        root_cert: tls.ca.clone(),
                    },
                )
            }
            _ => redis::Client::open(info),
        }
        .map_err(|e| BackendError::Config(e.to_string()))?;
        let timeout = endpoint.timeout;
        tracing::debug!(address = ?address, ?timeout, "connecting to Redis");
        let connect_timeout = endpoint.connect_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = tokio::time::timeout(
            connect_timeout + Duration::from_secs(1),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            BackendError::Timeout(format!(
                "connecting took longer than {}",
                crate::runbook::units::format_duration(connect_timeout)
            ))
        })?
        .map_err(redis_error)?;
        let mut named = connection.clone();
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(OWN_NAME)
            .query_async::<redis::Value>(&mut named)
            .await;
        Ok(RedisBackend {
            connection,
            address,
            username,
            password,
            db,
            cluster: None,
        })
    }

    /// The cluster router, for a cluster target.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Refuses an operation that works on one server only, for a cluster target.
    fn one_server(&self, what: &str) -> Result<(), BackendError> {
        match self.cluster {
            Some(_) => Err(BackendError::Config(format!(
                "{what} works on one server, and this target is a cluster"
            ))),
            None => Ok(()),
        }
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<redis::Value, BackendError> {
        if let Some(cluster) = &self.cluster {
            return match cluster.run(&[cmd]).await?.pop() {
                Some(redis::Value::ServerError(e)) => Err(redis_error(e.into())),
                Some(reply) => Ok(reply),
                None => Err(BackendError::Unexpected("no reply".into())),
            };
        }
        self.raw_node(cmd).await
    }

    /// One command to the server this connection is to, whatever its keys (for a cluster
    /// target: to the node itself, no routing).
    pub async fn raw_node(&self, cmd: &redis::Cmd) -> Result<redis::Value, BackendError> {
        let mut connection = self.connection.clone();
        cmd.query_async(&mut connection).await.map_err(redis_error)
    }

    /// A pipeline to the server this connection is to (no routing); refusals come back
    /// as `redis::Value::ServerError`.
    pub async fn pipeline_node(
        &self,
        mut pipe: redis::Pipeline,
    ) -> Result<Vec<redis::Value>, BackendError> {
        pipe.ignore_errors();
        let mut connection = self.connection.clone();
        pipe.query_async(&mut connection).await.map_err(redis_error)
    }

    /// PING; the value is the round-trip time.
    pub async fn ping(&self) -> Result<Duration, BackendError> {
        if let Some(cluster) = &self.cluster {
            let mut slowest = Duration::ZERO;
            for (_, node) in cluster.primaries().await? {
                slowest = slowest.max(Box::pin(node.ping()).await?);
            }
            return Ok(slowest);
        }
        let start = Instant::now();
        let reply = self.query(&redis::cmd("PING")).await?;
        let elapsed = start.elapsed();
        match reply {
            redis::Value::SimpleString(s) if s == "PONG" => Ok(elapsed),
            other => Err(BackendError::Unexpected(format!(
                "PING answered {}",
                to_value(other)
            ))),
        }
    }

    /// Parsed `INFO` (all sections, or one).
    pub async fn info_sections(
        &self,
        section: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeMap<String, Value>>, BackendError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg(section.unwrap_or("everything"));
        let text = to_value(self.query(&cmd).await?).as_text();
        Ok(parse_info(&text))
    }

    /// The server's flavor (`redis` or `valkey`) and version (`7.0.15`).
    pub async fn server_version(&self) -> Result<(String, String), BackendError> {
        Ok(server_version_of(
            &self.info_sections(Some("server")).await?,
        ))
    }

    /// One INFO field as a typed value; `section.field` or `field`, plus the derived
    /// `keyspace_hit_ratio`.
    /// On a cluster, the field of every primary: numbers summed, anything else the value
    /// they share (nodes that differ are an error naming them).
    pub async fn info(&self, section: Option<&str>, field: &str) -> Result<Value, BackendError> {
        if self.cluster.is_some() {
            let values = Box::pin(self.info_of_nodes(section, field)).await?;
            return aggregate_over_nodes(field, values);
        }
        let query_section = match (section, field) {
            // Sums over the commands: their counters are in `commandstats`.
            (Some("stats" | "commandstats") | None, "rejected_calls" | "failed_calls") => {
                Some("commandstats")
            }
            (Some("keyspace") | None, _) => None,
            (Some(s), _) => Some(s),
        };
        let sections = self.info_sections(query_section).await?;
        info_field(&sections, section, field).ok_or_else(|| {
            BackendError::Unexpected(format!(
                "INFO has no field `{}`",
                section
                    .map(|s| format!("{s}.{field}"))
                    .unwrap_or_else(|| field.to_owned())
            ))
        })
    }

    /// One INFO field of each node: every primary of a cluster, by its address, or this
    /// one server.
    pub async fn info_of_nodes(
        &self,
        section: Option<&str>,
        field: &str,
    ) -> Result<Vec<(String, Value)>, BackendError> {
        let Some(cluster) = &self.cluster else {
            return Ok(vec![(
                self.label(),
                Box::pin(self.info(section, field)).await?,
            )]);
        };
        let mut values = Vec::new();
        for (address, node) in cluster.primaries().await? {
            values.push((address, Box::pin(node.info(section, field)).await?));
        }
        Ok(values)
    }

    /// DBSIZE of each node: every primary of a cluster, by its address, or this one
    /// server.
    pub async fn dbsize_of_nodes(&self) -> Result<Vec<(String, u64)>, BackendError> {
        let Some(cluster) = &self.cluster else {
            return Ok(vec![(self.label(), Box::pin(self.dbsize()).await?)]);
        };
        let mut sizes = Vec::new();
        for (address, node) in cluster.primaries().await? {
            sizes.push((address, Box::pin(node.dbsize()).await?));
        }
        Ok(sizes)
    }

    /// How this one server is named among nodes: its `host:port` (or `server` through
    /// a unix socket).
    pub fn label(&self) -> String {
        self.address.clone().unwrap_or_else(|| "server".into())
    }

    /// `CLIENT LIST`, and the id of the connection that asked (redis-move's own).
    /// On a cluster, the clients of every node (primaries and replicas).
    pub async fn clients(&self) -> Result<(Vec<Client>, String), BackendError> {
        if let Some(cluster) = &self.cluster {
            let mut all = Vec::new();
            for address in cluster.all_nodes() {
                let (clients, id) = Box::pin(cluster.node(&address).await?.clients()).await?;
                all.extend(
                    clients
                        .into_iter()
                        .filter(|c| c.get("id") != id)
                        .map(|mut c| {
                            c.fields.insert("node".into(), address.clone());
                            c
                        }),
                );
            }
            return Ok((all, String::new()));
        }
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("ID").cmd("CLIENT").arg("LIST");
        let mut connection = self.connection.clone();
        let (id, list): (i64, String) = pipe
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok((parse_client_list(&list), id.to_string()))
    }

    /// Which server and database this connection writes to: its `run_id` and the
    /// database of `CLIENT INFO` (database 0 where that command is missing, before 6.2).
    pub async fn keyspace_identity(&self) -> Result<(String, u32), BackendError> {
        let run_id = self
            .info_sections(Some("server"))
            .await?
            .get("server")
            .and_then(|s| s.get("run_id"))
            .map(Value::as_text)
            .unwrap_or_default();
        let db = match self.query(redis::cmd("CLIENT").arg("INFO")).await {
            Ok(reply) => to_value(reply)
                .as_text()
                .split_whitespace()
                .find_map(|f| f.strip_prefix("db="))
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        Ok((run_id, db))
    }

    /// DBSIZE.
    /// On a cluster, summed over the primaries.
    pub async fn dbsize(&self) -> Result<u64, BackendError> {
        if self.cluster.is_some() {
            let sizes = Box::pin(self.dbsize_of_nodes()).await?;
            return Ok(sizes.iter().map(|(_, n)| n).sum());
        }
        match self.query(&redis::cmd("DBSIZE")).await? {
            redis::Value::Int(n) => Ok(n.max(0) as u64),
            other => Err(BackendError::Unexpected(format!(
                "DBSIZE answered {}",
                to_value(other)
            ))),
        }
    }

    /// Counts keys matching `pattern` with SCAN (never KEYS, which blocks the server).
    pub async fn scan_count(
        &self,
        pattern: &str,
        key_type: Option<&str>,
        count: u32,
    ) -> Result<u64, BackendError> {
        let mut cursor: u64 = 0;
        let mut total = 0u64;
        loop {
            let (next, keys) = self.scan_page(cursor, pattern, key_type, count).await?;
            total += keys.len() as u64;
            cursor = next;
            if cursor == 0 {
                return Ok(total);
            }
        }
    }

    /// One SCAN call from `cursor`: the next cursor (0 at the end) and the keys found.
    pub async fn scan_page(
        &self,
        cursor: u64,
        pattern: &str,
        key_type: Option<&str>,
        count: u32,
    ) -> Result<(u64, Vec<Vec<u8>>), BackendError> {
        match &self.cluster {
            Some(cluster) => cluster.scan_page(cursor, pattern, key_type, count).await,
            None => self.scan_node(cursor, pattern, key_type, count).await,
        }
    }

    /// One SCAN call on the server this connection is to (no routing).
    pub async fn scan_node(
        &self,
        cursor: u64,
        pattern: &str,
        key_type: Option<&str>,
        count: u32,
    ) -> Result<(u64, Vec<Vec<u8>>), BackendError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        if let Some(t) = key_type {
            cmd.arg("TYPE").arg(t);
        }
        match self.raw_node(&cmd).await? {
            redis::Value::Array(mut parts) if parts.len() == 2 => {
                let keys = match parts.pop() {
                    Some(redis::Value::Array(keys)) => keys
                        .into_iter()
                        .filter_map(|k| match k {
                            redis::Value::BulkString(bytes) => Some(bytes),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let next = to_value(parts.pop().unwrap_or(redis::Value::Nil))
                    .as_text()
                    .parse()
                    .map_err(|_| BackendError::Unexpected("SCAN answered a bad cursor".into()))?;
                Ok((next, keys))
            }
            other => Err(BackendError::Unexpected(format!(
                "SCAN answered {}",
                to_value(other)
            ))),
        }
    }

    /// Sends a pipeline and returns one reply per command; a command the server refused
    /// comes back as `redis::Value::ServerError` instead of failing the others. On a
    /// cluster, each command goes to its slot's node, and a read whose connection broke
    /// is sent again once the cluster settled (a write is not: the pipeline fails).
    pub async fn pipeline(&self, pipe: redis::Pipeline) -> Result<Vec<redis::Value>, BackendError> {
        match &self.cluster {
            Some(cluster) => {
                let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
                cluster.run(&cmds).await
            }
            None => self.pipeline_node(pipe).await,
        }
    }

    /// UNLINKs `keys` (one command per slot on a cluster: a command's keys must share
    /// one); how many existed.
    pub async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64, BackendError> {
        let mut groups: BTreeMap<u16, redis::Cmd> = BTreeMap::new();
        for key in keys {
            let slot = match self.cluster {
                Some(_) => super::cluster::key_slot(key),
                None => 0,
            };
            groups
                .entry(slot)
                .or_insert_with(|| redis::cmd("UNLINK"))
                .arg(key);
        }
        let mut pipe = redis::pipe();
        for unlink in groups.into_values() {
            pipe.add_command(unlink);
        }
        let mut removed = 0;
        for reply in self.pipeline(pipe).await? {
            match reply {
                redis::Value::ServerError(e) => return Err(redis_error(e.into())),
                redis::Value::Int(n) => removed += n.max(0) as u64,
                _ => {}
            }
        }
        Ok(removed)
    }

    /// One command with binary arguments; the raw reply (a refusal is an error).
    pub async fn raw(&self, cmd: &redis::Cmd) -> Result<redis::Value, BackendError> {
        self.query(cmd).await
    }

    /// Any command; the reply as a value.
    pub async fn command(&self, args: &[String]) -> Result<Value, BackendError> {
        let (name, rest) = args
            .split_first()
            .ok_or_else(|| BackendError::Config("empty command".into()))?;
        let mut cmd = redis::cmd(name);
        for arg in rest {
            cmd.arg(arg);
        }
        Ok(to_value(self.query(&cmd).await?))
    }

    /// CONFIG GET of one parameter: its value as text (a number for sizes).
    pub async fn config_get(&self, parameter: &str) -> Result<Value, BackendError> {
        let reply = self
            .command(&["CONFIG".into(), "GET".into(), parameter.into()])
            .await?;
        let value = match reply {
            Value::List(items) if items.len() >= 2 => items[1].clone(),
            Value::Object(fields) => fields.get(parameter).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        if value == Value::Null {
            return Err(BackendError::Unexpected(format!(
                "CONFIG GET knows no parameter `{parameter}`"
            )));
        }
        Ok(typed(&value.as_text()))
    }

    /// CONFIG SET; returns the previous value (for rollback).
    /// On a cluster, on every node (primaries and replicas), which must agree on the
    /// previous value (its rollback sets that one value back on each).
    pub async fn config_set(&self, parameter: &str, value: &str) -> Result<Value, BackendError> {
        if let Some(cluster) = &self.cluster {
            let mut before = Vec::new();
            for address in cluster.all_nodes() {
                let node = cluster.node(&address).await?;
                before.push((address, node.config_get(parameter).await?));
            }
            let previous = aggregate_over_nodes(parameter, before.clone())
                .ok()
                .filter(|_| before.windows(2).all(|w| w[0].1 == w[1].1))
                .ok_or_else(|| {
                    BackendError::Command(format!(
                        "the nodes hold different values of `{parameter}` ({}): set them one node at a time",
                        before
                            .iter()
                            .map(|(a, v)| format!("{a}: {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            for (address, _) in &before {
                Box::pin(cluster.node(address).await?.config_set(parameter, value)).await?;
            }
            return Ok(previous);
        }
        let previous = self.config_get(parameter).await?;
        self.command(&[
            "CONFIG".into(),
            "SET".into(),
            parameter.into(),
            value.into(),
        ])
        .await?;
        Ok(previous)
    }

    /// A configuration parameter as text (`""` when it has no value).
    pub async fn config_text(&self, parameter: &str) -> Result<String, BackendError> {
        let reply = self
            .command(&["CONFIG".into(), "GET".into(), parameter.into()])
            .await?;
        Ok(match reply {
            Value::List(items) if items.len() >= 2 => items[1].as_text(),
            Value::Object(fields) => fields
                .get(parameter)
                .map(Value::as_text)
                .unwrap_or_default(),
            _ => String::new(),
        })
    }

    /// Sets parameters, ignoring the ones this server does not know (older versions).
    pub async fn config_set_all(&self, settings: &[(String, String)]) -> Result<(), BackendError> {
        if let Some(cluster) = &self.cluster {
            for address in cluster.all_nodes() {
                Box::pin(cluster.node(&address).await?.config_set_all(settings)).await?;
            }
            return Ok(());
        }
        // A masked value (a password the journal does not keep) is left as it is.
        for (parameter, value) in settings.iter().filter(|(_, v)| v != crate::redact::MASK) {
            match self
                .command(&[
                    "CONFIG".into(),
                    "SET".into(),
                    parameter.clone(),
                    value.clone(),
                ])
                .await
            {
                Ok(_) => {}
                Err(BackendError::Command(msg))
                    if msg.contains("Unknown option")
                        || msg.contains("Unsupported CONFIG parameter") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The `replication` section of INFO.
    pub async fn replication(&self) -> Result<BTreeMap<String, Value>, BackendError> {
        self.one_server("the replication section")?;
        Ok(self
            .info_sections(Some("replication"))
            .await?
            .remove("replication")
            .unwrap_or_default())
    }

    /// `REPLICAOF host port` (`None`: `REPLICAOF NO ONE`).
    pub async fn replicaof(&self, address: Option<&str>) -> Result<(), BackendError> {
        self.one_server("REPLICAOF")?;
        let args: Vec<String> = match address {
            Some(address) => {
                let (host, port) = address
                    .rsplit_once(':')
                    .ok_or_else(|| BackendError::Config(format!("`{address}` is not host:port")))?;
                vec!["REPLICAOF".into(), host.into(), port.into()]
            }
            None => vec!["REPLICAOF".into(), "NO".into(), "ONE".into()],
        };
        self.command(&args).await.map(|_| ())
    }

    /// BullMQ queue counts as BullMQ's own `getJobCounts()` reports them, per queue and
    /// in total, with whether each queue is paused and how many job schedulers it has.
    pub async fn queues(&self, prefix: &str, only: &[String]) -> Result<Value, BackendError> {
        let names: Vec<String> = if only.is_empty() {
            self.queue_names(prefix).await?
        } else {
            only.to_vec()
        };
        let mut per_queue = BTreeMap::new();
        let mut total: BTreeMap<String, f64> = QUEUE_TOTALS
            .iter()
            .map(|field| ((*field).to_owned(), 0.0))
            .collect();
        for name in names {
            let key = |suffix: &str| format!("{prefix}:{name}:{suffix}");
            let mut pipe = redis::pipe();
            // Lists first (length and last element: BullMQ before v5 kept a `0:` marker
            // at the end of `wait`, and moved a paused queue's jobs to `paused`).
            for list in ["wait", "paused", "active"] {
                pipe.cmd("LLEN").arg(key(list));
                pipe.cmd("LINDEX").arg(key(list)).arg(-1);
            }
            for set in [
                "prioritized",
                "delayed",
                "completed",
                "failed",
                "waiting-children",
                "repeat",
            ] {
                pipe.cmd("ZCARD").arg(key(set));
            }
            pipe.cmd("HGET").arg(key("meta")).arg("paused");
            let replies = self.pipeline(pipe).await?;
            if let Some(redis::Value::ServerError(e)) = replies
                .iter()
                .find(|r| matches!(r, redis::Value::ServerError(_)))
            {
                // A key of the queue's shape that is not BullMQ's (`bull:cfg:wait` holding
                // a string): that queue is flagged, the others are counted.
                if e.code() != "WRONGTYPE" {
                    return Err(redis_error(e.clone().into()));
                }
                let mut queue = BTreeMap::new();
                queue.insert(
                    "error".to_owned(),
                    Value::Text(format!(
                        "not a BullMQ queue: {}",
                        redis_error(e.clone().into())
                    )),
                );
                per_queue.insert(name, Value::Object(queue));
                continue;
            }
            let replies: Vec<Value> = replies.into_iter().map(to_value).collect();
            let count = |i: usize| match &replies[i] {
                Value::Number(n) => *n,
                _ => 0.0,
            };
            let is_marker = |i: usize| replies[i].as_text().starts_with("0:");
            let list =
                |i: usize| (count(2 * i) - f64::from(u8::from(is_marker(2 * i + 1)))).max(0.0);
            let meta_paused = matches!(&replies[12], Value::Number(n) if *n != 0.0)
                || matches!(&replies[12], Value::Text(t) if t == "1");
            let legacy_paused = count(2) > 0.0;
            let fields = [
                ("waiting", list(0) + list(1)),
                ("active", count(4)),
                ("prioritized", count(6)),
                ("delayed", count(7)),
                ("completed", count(8)),
                ("failed", count(9)),
                ("waiting_children", count(10)),
                ("schedulers", count(11)),
            ];
            let mut queue = BTreeMap::new();
            let mut depth = 0.0;
            for (field, n) in fields {
                queue.insert(field.to_owned(), Value::Number(n));
                *total.entry(field.to_owned()).or_default() += n;
                if !matches!(field, "completed" | "failed" | "schedulers") {
                    depth += n;
                }
            }
            queue.insert("depth".into(), Value::Number(depth));
            *total.entry("depth".to_owned()).or_default() += depth;
            let paused = meta_paused || legacy_paused;
            queue.insert("paused".into(), Value::Bool(paused));
            *total.entry("paused".to_owned()).or_default() += f64::from(u8::from(paused));
            per_queue.insert(name, Value::Object(queue));
        }
        let mut out = BTreeMap::new();
        out.insert(
            "total".to_owned(),
            Value::Object(
                total
                    .into_iter()
                    .map(|(k, v)| (k, Value::Number(v)))
                    .collect(),
            ),
        );
        out.insert("queues".to_owned(), Value::Object(per_queue));
        Ok(Value::Object(out))
    }

    /// Queue names, from the `PREFIX:NAME:id` and `PREFIX:NAME:meta` keys BullMQ keeps.
    async fn queue_names(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let mut names = std::collections::BTreeSet::new();
        for suffix in ["id", "meta", "wait"] {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys) = self
                    .scan_page(cursor, &format!("{prefix}:*:{suffix}"), None, 1000)
                    .await?;
                cursor = next;
                {
                    for key in keys {
                        let key = String::from_utf8_lossy(&key);
                        if let Some(name) = key
                            .strip_prefix(&format!("{prefix}:"))
                            .and_then(|k| k.strip_suffix(&format!(":{suffix}")))
                            && !name.contains(':')
                        {
                            names.insert(name.to_owned());
                        }
                    }
                }
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}

/// The fields of `redis.queues`' `total`: job counts summed over the queues, `depth`
/// (the jobs not yet finished: waiting, active, prioritized, delayed, waiting for
/// children) and `paused` (how many queues are paused).
pub const QUEUE_TOTALS: &[&str] = &[
    "waiting",
    "active",
    "prioritized",
    "delayed",
    "completed",
    "failed",
    "waiting_children",
    "schedulers",
    "depth",
    "paused",
];

fn redis_error(e: redis::RedisError) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout(e.to_string())
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        BackendError::Unreachable(e.to_string())
    } else {
        BackendError::Command(e.to_string())
    }
}

/// One value of every node of a cluster: numbers summed, anything else the value they
/// share.
pub fn aggregate_over_nodes(
    field: &str,
    values: Vec<(String, Value)>,
) -> Result<Value, BackendError> {
    if values.iter().all(|(_, v)| matches!(v, Value::Number(_))) {
        return Ok(Value::Number(
            values
                .iter()
                .map(|(_, v)| if let Value::Number(n) = v { *n } else { 0.0 })
                .sum(),
        ));
    }
    match values.split_first() {
        Some(((_, first), rest)) if rest.iter().all(|(_, v)| v == first) => Ok(first.clone()),
        _ => Err(BackendError::Command(format!(
            "the cluster's primaries differ in `{field}`: {}",
            values
                .iter()
                .map(|(a, v)| format!("{a}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Text that looks like a number becomes a number.
fn typed(text: &str) -> Value {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Value::Number(n),
        _ => Value::Text(text.to_owned()),
    }
}

/// A redis reply as a value.
pub fn to_value(reply: redis::Value) -> Value {
    match reply {
        redis::Value::Nil => Value::Null,
        redis::Value::Int(i) => Value::Number(i as f64),
        redis::Value::BulkString(bytes) => {
            Value::Text(String::from_utf8_lossy(&bytes).into_owned())
        }
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Value::List(items.into_iter().map(to_value).collect())
        }
        redis::Value::Push { data, .. } => Value::List(data.into_iter().map(to_value).collect()),
        redis::Value::SimpleString(s) => Value::Text(s),
        redis::Value::Okay => Value::Text("OK".into()),
        redis::Value::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (to_value(k).as_text(), to_value(v)))
                .collect(),
        ),
        redis::Value::Attribute { data, .. } => to_value(*data),
        redis::Value::Double(d) => Value::Number(d),
        redis::Value::Boolean(b) => Value::Bool(b),
        redis::Value::VerbatimString { text, .. } => Value::Text(text),
        redis::Value::BigNumber(n) => typed(&n.to_string()),
        redis::Value::ServerError(e) => Value::Text(format!("error: {e:?}")),
        _ => Value::Null,
    }
}

/// `INFO` text -> section -> field -> typed value. Keyspace lines (`db0:keys=1,...`)
/// become objects.
pub fn parse_info(text: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut current = String::from("default");
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("# ") {
            current = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let listed = matches!(
            current.as_str(),
            "keyspace" | "errorstats" | "commandstats" | "latencystats"
        );
        let value =
            if (listed && value.contains('=')) || (value.contains('=') && value.contains(',')) {
                Value::Object(
                    value
                        .split(',')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.to_owned(), typed(v)))
                        .collect(),
                )
            } else {
                typed(value)
            };
        sections
            .entry(current.clone())
            .or_default()
            .insert(key.to_owned(), value);
    }
    sections
}

/// Looks a field up in parsed INFO; `section` narrows it. `keyspace_hit_ratio` is
/// derived (hits / (hits + misses); null before any lookup).
pub fn info_field(
    sections: &BTreeMap<String, BTreeMap<String, Value>>,
    section: Option<&str>,
    field: &str,
) -> Option<Value> {
    if field == "replica_lag_bytes" {
        // On a primary: how far its slowest replica is behind.
        let replication = sections.get("replication")?;
        let offset = match replication.get("master_repl_offset") {
            Some(Value::Number(n)) => *n,
            _ => return None,
        };
        let slowest = replication
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()))
            .filter_map(|(_, v)| match v.field("offset") {
                Some(Value::Number(n)) => Some(*n),
                _ => None,
            })
            .fold(None, |min: Option<f64>, o| {
                Some(min.map_or(o, |m| m.min(o)))
            });
        return Some(slowest.map_or(Value::Null, |o| Value::Number((offset - o).max(0.0))));
    }
    if field == "keyspace_hit_ratio" {
        let stats = sections.get("stats")?;
        let get = |k: &str| match stats.get(k) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        };
        let (hits, misses) = (get("keyspace_hits")?, get("keyspace_misses")?);
        return Some(if hits + misses == 0.0 {
            Value::Null
        } else {
            Value::Number(hits / (hits + misses))
        });
    }
    // Summed over every command (`cmdstat_*`; Redis 6.2+): commands refused before they
    // ran (OOM, READONLY, NOAUTH, a wrong arity) and commands that failed while running.
    if matches!(section, Some("stats" | "commandstats") | None)
        && matches!(field, "rejected_calls" | "failed_calls")
    {
        let commands = sections.get("commandstats")?;
        let mut sum = None;
        for stats in commands.values() {
            if let Some(Value::Number(n)) = stats.field(field) {
                sum = Some(sum.unwrap_or(0.0) + n);
            }
        }
        // No command run yet counts as zero; counters missing from every command
        // (before 6.2) are not known.
        return Some(match sum {
            Some(n) => Value::Number(n),
            None if commands.is_empty() => Value::Number(0.0),
            None => Value::Null,
        });
    }
    // `errorstats.OOM`: how many replies began with that error (Redis 6.2+). INFO lists
    // only the errors that happened, so one that never did is zero.
    if section == Some("errorstats") && !field.starts_with("errorstat_") {
        let errors = sections.get("errorstats");
        return Some(
            errors
                // Error kinds are upper case (`OOM`, `WRONGTYPE`): `errorstats.oom` too.
                .and_then(|e| e.get(&format!("errorstat_{}", field.to_ascii_uppercase())))
                .and_then(|v| v.field("count").cloned())
                .unwrap_or(Value::Number(0.0)),
        );
    }
    // `commandstats.set.rejected_calls`: one counter of one command.
    if section == Some("commandstats")
        && let Some((command, counter)) = field.split_once('.')
    {
        return Some(
            sections
                .get("commandstats")
                .and_then(|c| c.get(&format!("cmdstat_{command}")))
                .and_then(|v| v.field(counter).cloned())
                .unwrap_or(Value::Number(0.0)),
        );
    }
    // `db0.keys` under keyspace.
    if matches!(section, Some("keyspace") | None)
        && let Some((db, sub)) = field.split_once('.')
    {
        let keyspace = sections.get("keyspace");
        return match keyspace.and_then(|k| k.get(db)) {
            Some(Value::Object(fields)) => fields.get(sub).cloned().or(Some(Value::Number(0.0))),
            _ => Some(Value::Number(0.0)), // an empty database has no keyspace line
        };
    }
    match section {
        Some("keyspace") => Some(
            sections
                .get("keyspace")
                .and_then(|k| k.get(field))
                .cloned()
                .unwrap_or(Value::Null),
        ),
        Some(section) => sections.get(section)?.get(field).cloned(),
        None => sections.values().find_map(|s| s.get(field).cloned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:1171000\r\nused_memory_human:1.12M\r\nmaxmemory_policy:noeviction\r\n\r\n# Stats\r\nkeyspace_hits:30\r\nkeyspace_misses:10\r\nevicted_keys:0\r\n\r\n# Keyspace\r\ndb0:keys=12,expires=3,avg_ttl=100\r\n";

    #[test]
    fn info_fields_are_typed() {
        let sections = parse_info(INFO);
        assert_eq!(
            info_field(&sections, Some("memory"), "used_memory"),
            Some(Value::Number(1_171_000.0))
        );
        assert_eq!(
            info_field(&sections, None, "maxmemory_policy"),
            Some(Value::Text("noeviction".into()))
        );
        assert_eq!(
            info_field(&sections, Some("stats"), "keyspace_hit_ratio"),
            Some(Value::Number(0.75))
        );
        assert_eq!(
            info_field(&sections, Some("keyspace"), "db0.keys"),
            Some(Value::Number(12.0))
        );
        assert_eq!(
            info_field(&sections, Some("keyspace"), "db3.keys"),
            Some(Value::Number(0.0))
        );
        assert_eq!(info_field(&sections, Some("memory"), "nope"), None);
    }

    const STATS: &str = "# Errorstats\r\nerrorstat_ERR:count=28\r\nerrorstat_OOM:count=3\r\n\r\n# Commandstats\r\ncmdstat_set:calls=15,usec=8,usec_per_call=0.53,rejected_calls=3,failed_calls=0\r\ncmdstat_eval:calls=4,usec=8,usec_per_call=2.00,rejected_calls=1,failed_calls=2\r\n";

    #[test]
    fn error_and_command_counters_are_fields() {
        let sections = parse_info(STATS);
        assert_eq!(
            info_field(&sections, Some("errorstats"), "OOM"),
            Some(Value::Number(3.0))
        );
        // An error that never happened is not listed by INFO, and is zero.
        assert_eq!(
            info_field(&sections, Some("errorstats"), "READONLY"),
            Some(Value::Number(0.0))
        );
        assert_eq!(
            info_field(&sections, Some("errorstats"), "oom"),
            Some(Value::Number(3.0))
        );
        assert_eq!(
            info_field(&sections, Some("stats"), "rejected_calls"),
            Some(Value::Number(4.0))
        );
        assert_eq!(
            info_field(&sections, Some("stats"), "failed_calls"),
            Some(Value::Number(2.0))
        );
        assert_eq!(
            info_field(&sections, Some("commandstats"), "set.rejected_calls"),
            Some(Value::Number(3.0))
        );
        // Before Redis 6.2 the command stats carry no such counters.
        let old =
            parse_info("# Commandstats\r\ncmdstat_set:calls=15,usec=8,usec_per_call=0.53\r\n");
        assert_eq!(
            info_field(&old, Some("stats"), "rejected_calls"),
            Some(Value::Null)
        );
    }
}
