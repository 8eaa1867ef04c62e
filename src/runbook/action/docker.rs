//! Parameters of the `docker.*` actions.

use std::fmt;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ActionParams, Effect, Inverse, Shape, TargetKind, describe_env, describe_selection};
use crate::runbook::de::Spanned;
use crate::runbook::expect::check_regex;
use crate::runbook::template::Template;
use crate::runbook::units::RunbookDuration;

/// A container state, as Docker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Dead.
    Dead,
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        };
        f.write_str(text)
    }
}

/// What `docker.containers` yields for each container.
pub static CONTAINER_SHAPE: Shape = Shape::Object(&[
    ("name", Shape::Text),
    ("id", Shape::Text),
    ("state", Shape::Text),
    ("health", Shape::Text),
    ("image", Shape::Text),
    ("created", Shape::Timestamp),
    ("mounts", Shape::List(&Shape::Text)),
    ("env", Shape::List(&Shape::Text)),
    ("networks", Shape::List(&Shape::Text)),
    ("labels", Shape::Any),
    ("restart_count", Shape::Number),
    ("exit_code", Shape::Number),
]);

static CONTAINERS: Shape = Shape::List(&CONTAINER_SHAPE);

static LOG_LINE: Shape = Shape::Object(&[("container", Shape::Text), ("line", Shape::Text)]);

/// What commands run in a container or locally yield.
pub static COMMAND_RESULT: Shape = Shape::Object(&[
    ("exit_code", Shape::Number),
    ("stdout", Shape::Text),
    ("stderr", Shape::Text),
    ("output", Shape::Text),
]);

static IMAGE: Shape = Shape::Object(&[
    ("id", Shape::Text),
    ("tags", Shape::List(&Shape::Text)),
    ("created", Shape::Timestamp),
    ("size", Shape::Bytes),
]);

static VOLUME: Shape = Shape::Object(&[
    ("name", Shape::Text),
    ("driver", Shape::Text),
    ("mountpoint", Shape::Text),
    ("created", Shape::Timestamp),
]);

static CHANGED: Shape = Shape::Object(&[
    ("containers", Shape::List(&Shape::Text)),
    ("count", Shape::Number),
]);

/// The `target`/`target_kind` of an action on a Docker target.
macro_rules! docker_target {
    () => {
        fn target(&self) -> Option<&Spanned<String>> {
            self.target.as_ref()
        }
        fn target_kind(&self) -> Option<TargetKind> {
            Some(TargetKind::Docker)
        }
    };
}

/// Whether a container-name regex matches every name: it matches the empty text (an
/// empty pattern, `.*`, `^`), so it finds a match in any name.
pub fn matches_every_name(regex: &regex::Regex) -> bool {
    regex.is_match("")
}

/// A mutating action's selection must not take every container of the engine by
/// accident: with no `labels`, its `name` must be given and must not match every name,
/// unless the step says `all: true`.
fn check_mutating_selection(
    name: Option<&Template>,
    labels: &IndexMap<String, String>,
    all: Option<bool>,
) -> Vec<(&'static str, String)> {
    if all == Some(true) || !labels.is_empty() {
        return Vec::new();
    }
    let every = match name {
        None => Some("it has neither `name:` nor `labels:`".to_owned()),
        Some(template) => template
            .as_literal()
            .and_then(|text| {
                crate::runbook::expect::compile_regex(text)
                    .ok()
                    .map(|r| (text, r))
            })
            .filter(|(_, r)| matches_every_name(r))
            .map(|(text, _)| format!("`name: \"{text}\"` matches every container name")),
    };
    match every {
        Some(why) => vec![(
            "name",
            format!(
                "it would act on every container of the engine: {why}; narrow it{}",
                if all.is_some() {
                    ", or say `all: true` if that is meant"
                } else {
                    ""
                }
            ),
        )],
        None => Vec::new(),
    }
}

fn check_name_regex(name: Option<&Template>) -> Vec<(&'static str, String)> {
    match name.and_then(Template::as_literal) {
        Some(text) => check_regex(text)
            .err()
            .map(|e| ("name", e))
            .into_iter()
            .collect(),
        None => Vec::new(),
    }
}

/// Defines a parameter struct that selects containers (`target`, `name`, `labels`,
/// `state`) plus its own fields.
macro_rules! container_params {
    ($(#[$doc:meta])* $name:ident { $( $(#[$fdoc:meta])* $vis:vis $field:ident : $ty:ty, )* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize, JsonSchema)]
        #[schemars(deny_unknown_fields)]
        pub struct $name {
            /// The Docker target (may be left out when the runbook has one Docker target).
            #[serde(default)]
            pub target: Option<Spanned<String>>,
            /// Regex matched against container names (`fiskai-worker` matches every worker).
            #[serde(default)]
            pub name: Option<Template>,
            /// Labels the containers must carry.
            #[serde(default)]
            pub labels: IndexMap<String, String>,
            /// Only containers in this state.
            #[serde(default)]
            pub state: Option<ContainerState>,
            $( $(#[$fdoc])* $vis $field: $ty, )*
        }

        impl $name {
            fn selection(&self) -> String {
                describe_selection(self.name.as_ref(), &self.labels, self.state)
            }
        }
    };
}

container_params! {
    /// `docker.containers`: the value is the list of matching containers.
    ContainersParams {}
}

impl ActionParams for ContainersParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        CONTAINERS
    }
    fn describe(&self) -> String {
        format!("list {}", self.selection())
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        check_name_regex(self.name.as_ref())
    }
}

container_params! {
    /// `docker.logs`: the value is the list of matching lines.
    LogsParams {
        /// Regex a line must match to be kept (every line when left out).
        #[serde(default, rename = "match")]
        pub pattern: Option<Template>,
        /// Only lines logged in this recent period (`10min`), or since the run started
        /// when set to `run`.
        #[serde(default)]
        pub since: Option<LogSince>,
        /// Only the last N lines of each container.
        #[serde(default)]
        pub tail: Option<u32>,
    }
}

/// Where `docker.logs` starts reading.
#[derive(Clone, Debug, PartialEq)]
pub enum LogSince {
    /// A period before now.
    Ago(RunbookDuration),
    /// Since the run started.
    RunStart,
}

impl<'de> Deserialize<'de> for LogSince {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::runbook::de::deserialize_parsed(d, "a duration or `run`", |text| {
            if text == "run" {
                Ok(LogSince::RunStart)
            } else {
                text.parse().map(LogSince::Ago)
            }
        })
    }
}

impl JsonSchema for LogSince {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LogSince".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration before now (`10min`) or `run` (since the run started)."
        })
    }
}

impl ActionParams for LogsParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::List(&LOG_LINE)
    }
    fn describe(&self) -> String {
        let mut out = format!("read logs of {}", self.selection());
        if let Some(pattern) = &self.pattern {
            out.push_str(&format!(", lines matching /{}/", pattern.display()));
        }
        match &self.since {
            Some(LogSince::Ago(d)) => out.push_str(&format!(", last {d}")),
            Some(LogSince::RunStart) => out.push_str(", since the run started"),
            None => {}
        }
        if let Some(tail) = self.tail {
            out.push_str(&format!(", last {tail} lines"));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check_name_regex(self.name.as_ref());
        if let Some(text) = self.pattern.as_ref().and_then(Template::as_literal)
            && let Err(e) = check_regex(text)
        {
            problems.push(("match", e));
        }
        problems
    }
}

/// `docker.exec`: run a command in one running container.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ExecParams {
    /// The Docker target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The container's exact name.
    pub container: Template,
    /// The command and its arguments (no shell: write `[sh, -c, "..."]` for one).
    pub cmd: Vec<Template>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: IndexMap<String, Template>,
    /// User to run as.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Declares that the command changes nothing (it then needs no rollback and a dry
    /// run may run it).
    #[serde(default)]
    pub read_only: bool,
}

impl ActionParams for ExecParams {
    docker_target!();
    fn effect(&self) -> Effect {
        if self.read_only {
            Effect::ReadOnly
        } else {
            Effect::Mutating
        }
    }
    fn shape(&self) -> Shape {
        COMMAND_RESULT
    }
    fn describe(&self) -> String {
        format!(
            "exec in `{}`: {}",
            self.container.display(),
            shell_words(&self.cmd)
        )
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        if self.cmd.is_empty() {
            vec![(
                "cmd",
                "`cmd` is empty: give the command and its arguments".into(),
            )]
        } else {
            Vec::new()
        }
    }
}

/// Joins argv for display, quoting where a shell would need it.
pub(crate) fn shell_words(argv: &[Template]) -> String {
    argv.iter()
        .map(|a| {
            let shown = a.display();
            if shown.is_empty()
                || shown.contains(|c: char| c.is_whitespace() || "'\"$`\\|&;<>()*?".contains(c))
            {
                format!("'{}'", shown.replace('\'', "'\\''"))
            } else {
                shown
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A container restart policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Always restart.
    Always,
    /// Restart unless stopped by hand.
    UnlessStopped,
    /// Restart when the process fails.
    OnFailure,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        })
    }
}

/// When to pull the image of `docker.run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull only when the image is not present (default).
    #[default]
    Missing,
    /// Always pull.
    Always,
    /// Never pull; fail if the image is missing.
    Never,
}

/// A container health check.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Healthcheck {
    /// The command (`[redis-cli, ping]`); run without a shell.
    pub test: Vec<Template>,
    /// Time between checks.
    #[serde(default)]
    pub interval: Option<RunbookDuration>,
    /// Time a check may take.
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
    /// Failures before the container is unhealthy.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Grace period after start.
    #[serde(default)]
    pub start_period: Option<RunbookDuration>,
}

/// `docker.run`: create and start a container.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunParams {
    /// The Docker target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The image (`redis:7-alpine`).
    pub image: Template,
    /// The container name.
    #[serde(default)]
    pub name: Option<Template>,
    /// The command and arguments (the image's default when left out).
    #[serde(default)]
    pub cmd: Vec<Template>,
    /// Environment variables.
    #[serde(default)]
    pub env: IndexMap<String, Template>,
    /// Volumes and bind mounts, `source:destination[:ro]`.
    #[serde(default)]
    pub volumes: Vec<Template>,
    /// Published ports, `[ip:]host:container`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// Health check.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Networks to attach.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: IndexMap<String, String>,
    /// Files written into the container before it starts: path -> content (a
    /// `redis.conf` reaches a remote host without SSH).
    #[serde(default)]
    pub files: IndexMap<String, Template>,
    /// Run once and remove: the exit code and output are the value.
    #[serde(default)]
    pub rm: bool,
    /// When to pull the image.
    #[serde(default)]
    pub pull: PullPolicy,
}

impl ActionParams for RunParams {
    docker_target!();
    fn effect(&self) -> Effect {
        // A one-off `rm: true` container leaves nothing behind.
        if self.rm {
            Effect::ReadOnly
        } else {
            Effect::Mutating
        }
    }
    fn inverse(&self) -> Inverse {
        if self.rm {
            Inverse::NotNeeded
        } else {
            Inverse::Builtin("remove the container it created")
        }
    }
    fn shape(&self) -> Shape {
        if self.rm {
            COMMAND_RESULT
        } else {
            CONTAINER_SHAPE
        }
    }
    fn describe(&self) -> String {
        let mut out = if self.rm {
            format!("run once (removed after) image {}", self.image.display())
        } else {
            format!("run container image {}", self.image.display())
        };
        if let Some(name) = &self.name {
            out.push_str(&format!(" as `{}`", name.display()));
        }
        if !self.cmd.is_empty() {
            out.push_str(&format!(": {}", shell_words(&self.cmd)));
        }
        if !self.env.is_empty() {
            out.push_str(&format!(" with {}", describe_env(&self.env)));
        }
        if !self.files.is_empty() {
            let files: Vec<_> = self.files.keys().map(String::as_str).collect();
            out.push_str(&format!("; files {}", files.join(", ")));
        }
        if !self.ports.is_empty() {
            out.push_str(&format!("; ports {}", self.ports.join(", ")));
        }
        if !self.volumes.is_empty() {
            let volumes: Vec<_> = self.volumes.iter().map(Template::display).collect();
            out.push_str(&format!("; volumes {}", volumes.join(", ")));
        }
        if let Some(restart) = self.restart {
            out.push_str(&format!("; restart {restart}"));
        }
        if self.healthcheck.is_some() {
            out.push_str("; with healthcheck");
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.rm && self.restart.is_some_and(|r| r != RestartPolicy::No) {
            problems.push((
                "restart",
                "`rm: true` containers cannot have a restart policy".into(),
            ));
        }
        for path in self.files.keys() {
            if !path.starts_with('/') {
                problems.push(("files", format!("file path `{path}` must be absolute")));
            }
        }
        problems
    }
}

/// `docker.images`: the value is the list of matching images.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ImagesParams {
    /// The Docker target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Regex matched against image tags (`fiskai-worker`).
    #[serde(default)]
    pub name: Option<Template>,
}

impl ActionParams for ImagesParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::List(&IMAGE)
    }
    fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("list images matching /{}/", name.display()),
            None => "list images".into(),
        }
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        check_name_regex(self.name.as_ref())
    }
}

/// `docker.volumes`: the value is the list of matching volumes.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct VolumesParams {
    /// The Docker target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Regex matched against volume names.
    #[serde(default)]
    pub name: Option<Template>,
}

impl ActionParams for VolumesParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::List(&VOLUME)
    }
    fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("list volumes matching /{}/", name.display()),
            None => "list volumes".into(),
        }
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        check_name_regex(self.name.as_ref())
    }
}

/// `docker.remove_volume`: remove one volume by exact name.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RemoveVolumeParams {
    /// The Docker target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The volume's exact name.
    pub name: Template,
    /// Remove even if a container uses it.
    #[serde(default)]
    pub force: bool,
}

impl ActionParams for RemoveVolumeParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn shape(&self) -> Shape {
        Shape::Nothing
    }
    fn describe(&self) -> String {
        format!(
            "remove volume `{}`{} (its data is deleted)",
            self.name.display(),
            if self.force { " (forced)" } else { "" }
        )
    }
}

container_params! {
    /// `docker.stop`: stop matching containers in parallel.
    StopParams {
        /// Act on every container the selection matches even when it matches every
        /// container of the engine (an empty or match-all `name`, no `labels`).
        #[serde(default)]
        pub all: bool,
        /// Grace period before SIGKILL (Docker's default is 10s).
        #[serde(default)]
        pub timeout: Option<RunbookDuration>,
    }
}

impl ActionParams for StopParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin("start the containers it stopped")
    }
    fn shape(&self) -> Shape {
        CHANGED
    }
    fn describe(&self) -> String {
        let mut out = format!("stop {}", self.selection());
        if let Some(t) = self.timeout {
            out.push_str(&format!(", grace period {t}"));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check_name_regex(self.name.as_ref());
        problems.extend(check_mutating_selection(
            self.name.as_ref(),
            &self.labels,
            Some(self.all),
        ));
        problems
    }
}

container_params! {
    /// `docker.start`: start matching containers in parallel.
    StartParams {
        /// Act on every container the selection matches even when it matches every
        /// container of the engine (an empty or match-all `name`, no `labels`).
        #[serde(default)]
        pub all: bool,
    }
}

impl ActionParams for StartParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin("stop the containers it started")
    }
    fn shape(&self) -> Shape {
        CHANGED
    }
    fn describe(&self) -> String {
        format!("start {}", self.selection())
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check_name_regex(self.name.as_ref());
        problems.extend(check_mutating_selection(
            self.name.as_ref(),
            &self.labels,
            Some(self.all),
        ));
        problems
    }
}

container_params! {
    /// `docker.restart`: restart matching containers in parallel.
    RestartParams {
        /// Act on every container the selection matches even when it matches every
        /// container of the engine (an empty or match-all `name`, no `labels`).
        #[serde(default)]
        pub all: bool,
        /// Grace period before SIGKILL.
        #[serde(default)]
        pub timeout: Option<RunbookDuration>,
    }
}

impl ActionParams for RestartParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        // A restart leaves the configuration as it was: there is nothing to restore.
        Inverse::NotNeeded
    }
    fn shape(&self) -> Shape {
        CHANGED
    }
    fn describe(&self) -> String {
        format!("restart {}", self.selection())
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check_name_regex(self.name.as_ref());
        problems.extend(check_mutating_selection(
            self.name.as_ref(),
            &self.labels,
            Some(self.all),
        ));
        problems
    }
}

container_params! {
    /// `docker.recreate`: replace matching containers with copies whose environment
    /// and/or image changed; everything else (labels, mounts, networks, restart policy)
    /// is kept.
    RecreateParams {
        /// Act on every container the selection matches even when it matches every
        /// container of the engine (an empty or match-all `name`, no `labels`).
        #[serde(default)]
        pub all: bool,
        /// Environment variables to set (others are kept).
        #[serde(default)]
        pub env: IndexMap<String, Template>,
        /// A new image.
        #[serde(default)]
        pub image: Option<Template>,
        /// Grace period when stopping the old container.
        #[serde(default)]
        pub timeout: Option<RunbookDuration>,
    }
}

impl ActionParams for RecreateParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin("recreate with the previous configuration (captured before the change)")
    }
    fn shape(&self) -> Shape {
        CHANGED
    }
    fn describe(&self) -> String {
        let mut changes = Vec::new();
        if !self.env.is_empty() {
            changes.push(describe_env(&self.env));
        }
        if let Some(image) = &self.image {
            changes.push(format!("image {}", image.display()));
        }
        format!(
            "recreate {} with {}",
            self.selection(),
            changes.join(" and ")
        )
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check_name_regex(self.name.as_ref());
        problems.extend(check_mutating_selection(
            self.name.as_ref(),
            &self.labels,
            Some(self.all),
        ));
        if self.env.is_empty() && self.image.is_none() {
            problems.push((
                "env",
                "`docker.recreate` changes nothing: give `env:` and/or `image:`".into(),
            ));
        }
        problems
    }
}

container_params! {
    /// `docker.remove`: remove matching containers.
    RemoveParams {
        /// Remove running containers too (they are killed).
        #[serde(default)]
        pub force: bool,
    }
}

impl ActionParams for RemoveParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn shape(&self) -> Shape {
        CHANGED
    }
    fn describe(&self) -> String {
        format!(
            "remove {}{} (volumes are kept)",
            self.selection(),
            if self.force { ", forced" } else { "" }
        )
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check_name_regex(self.name.as_ref());
        if self.name.is_none() && self.labels.is_empty() {
            problems.push((
                "name",
                "`docker.remove` needs `name:` or `labels:`; it never removes every container"
                    .into(),
            ));
        } else {
            problems.extend(check_mutating_selection(
                self.name.as_ref(),
                &self.labels,
                None,
            ));
        }
        problems
    }
}

container_params! {
    /// `docker.wait_healthy`: wait until every matching container is healthy (or
    /// running, for containers without a health check).
    WaitHealthyParams {
        /// How long to wait (default 60s).
        #[serde(default)]
        pub timeout: Option<RunbookDuration>,
    }
}

impl ActionParams for WaitHealthyParams {
    docker_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        CONTAINERS
    }
    fn describe(&self) -> String {
        let timeout = self
            .timeout
            .map(|t| t.to_string())
            .unwrap_or_else(|| "60s".into());
        format!(
            "wait up to {timeout} until {} are healthy",
            self.selection()
        )
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        check_name_regex(self.name.as_ref())
    }
}
