//! Semantic validation: from the deserialized [`RunbookSpec`] to a [`Runbook`] whose
//! references all resolve. Every problem is collected, with its position, so that one
//! `redis-move validate` shows them all.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;

use super::action::{Action, Effect, Inverse, Shape, TargetKind};
use super::de::{Spanned, backticked, did_you_mean};
use super::diagnostic::Diagnostic;
use super::expect::{EXPECT_KEYWORDS, Expect};
use super::model::{
    Baseline, FireCondition, Phase, Runbook, Step, StepRollback, Target, Trigger, Window,
};
use super::source::{SourceFile, Span};
use super::spec::{
    DataPolicy, FireSpec, OnFailure, PhaseSpec, RollbackSpec, RunbookSpec, StepSpec, TargetSpec,
    TriggerSpec,
};
use super::template::{Reference, Template};
use super::units::Quantity;
use super::vars::ResolvedVar;
use super::yaml::Node;
use crate::plan::graph::PhaseGraph;

const DEFAULT_TRIGGER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a step sits, which decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A step of a phase.
    PhaseStep,
    /// A rollback step (of a step, a phase or the runbook).
    Rollback,
    /// A trigger's probe or a step's `skip_if`: read-only.
    Probe,
}

/// Validates `spec` (read from `root`, the document after var substitution).
pub fn validate(
    source: Arc<SourceFile>,
    sha256: String,
    spec: &RunbookSpec,
    root: &Node,
    vars: IndexMap<String, ResolvedVar>,
) -> (Option<Runbook>, Vec<Diagnostic>) {
    let mut v = Validator {
        diagnostics: Vec::new(),
        targets: IndexMap::new(),
        broken_targets: Default::default(),
        cluster_targets: Default::default(),
        sentinel_targets: Default::default(),
        secrets: spec.secrets.keys().cloned().collect(),
        step_spans: HashMap::new(),
        step_shapes: HashMap::new(),
        step_phase: HashMap::new(),
    };
    v.check_header(spec, root.span);
    let targets = v.targets(spec);
    let phases = v.phases(spec);
    let graphs = v.graphs(&phases);
    let rollback = v.rollback_steps(&spec.rollback, "rollback");
    let triggers = v.triggers(spec, &phases);
    v.check_names(root);
    v.check_references(root, &phases, &graphs);
    v.check_backups(&phases, &graphs);
    v.check_syncs(&phases, &graphs, &triggers, &rollback);
    let lock = v.lock(spec);
    v.check_notify(spec);

    let secrets = spec
        .secrets
        .iter()
        .filter_map(|(name, s)| s.get().map(|s| (name.clone(), s.value.clone())))
        .collect();
    let has_errors = v.diagnostics.iter().any(Diagnostic::is_error);
    let runbook = (!has_errors).then(|| Runbook {
        source,
        sha256,
        name: spec
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_default(),
        title: spec.title.clone(),
        description: spec.description.clone(),
        vars,
        secrets,
        targets,
        phases,
        triggers,
        rollback,
        lock,
        notify: spec
            .notify
            .iter()
            .map(|n| &n.value)
            .map(|n| crate::runbook::model::Notify {
                webhook: n.webhook.clone(),
                format: n.format,
                events: n.events.clone(),
                timeout: n
                    .timeout
                    .as_ref()
                    .map_or(std::time::Duration::from_secs(5), |t| t.0),
            })
            .collect(),
    });
    (runbook, v.diagnostics)
}

struct Validator {
    diagnostics: Vec<Diagnostic>,
    targets: IndexMap<String, (TargetKind, Span)>,
    /// Targets declared but not readable (their own error says why): references to
    /// them are not reported again as unknown.
    broken_targets: std::collections::HashSet<String>,
    /// Redis targets that are clusters (`cluster:`).
    cluster_targets: std::collections::HashSet<String>,
    /// Redis targets behind Sentinel (`sentinel:`).
    sentinel_targets: std::collections::HashSet<String>,
    secrets: Vec<String>,
    /// Phase steps (and gate phases) by id.
    step_spans: HashMap<String, Span>,
    step_shapes: HashMap<String, Shape>,
    /// (phase index, step index) of each phase step.
    step_phase: HashMap<String, (usize, usize)>,
}

/// A rate trigger's baseline below this (per second) counts as this: one a minute.
pub const DEFAULT_BASELINE_FLOOR: f64 = 1.0 / 60.0;

/// What is wrong with a webhook URL (`None`: an http(s) URL with a host). The URL
/// itself is never in the answer (it may be a secret).
pub fn webhook_problem(url: &str) -> Option<String> {
    match url::Url::parse(url) {
        Err(e) => Some(format!("not a URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("the scheme is `{}`, not http or https", u.scheme()))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("the URL has no host".into()),
        Ok(_) => None,
    }
}

/// Whether `text` can be an id (a runbook's name, a step's): a letter or digit, then
/// letters, digits, `-` and `_`.
pub fn is_id(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn unknown_name(
    code: &'static str,
    span: Span,
    what: &str,
    name: &str,
    known: &[&str],
) -> Diagnostic {
    let d = Diagnostic::error(code, span, format!("unknown {what} `{name}`"));
    match did_you_mean(name, known.iter().copied()) {
        Some(best) => d.with_help(format!("did you mean `{best}`?")),
        None if known.is_empty() => d.with_help(format!("this runbook declares no {what}s")),
        None => d.with_help(format!("known {what}s: {}", backticked(known))),
    }
}

impl Validator {
    fn error(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::error(code, span, message));
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn check_header(&mut self, spec: &RunbookSpec, top: Span) {
        match &spec.version {
            Some(version) if version.value != 1 => {
                self.error(
                    "unsupported-version",
                    version.span,
                    format!("runbook format version {} is not supported", version.value),
                )
                .help = Some("this redis-move reads `version: 1`".into());
            }
            Some(_) => {}
            None => {
                self.error("missing-field", top, "missing field `version`")
                    .help = Some("start the runbook with `version: 1`".into());
            }
        }
        match &spec.name {
            Some(name) if !is_id(&name.value) => {
                self.error(
                    "bad-name",
                    name.span,
                    format!("`{}` is not a valid runbook name", name.value),
                )
                .help =
                    Some("use letters, digits, `-` and `_` (it names the state directory)".into());
            }
            Some(_) => {}
            None => {
                self.error("missing-field", top, "missing field `name`").help =
                    Some("add `name: my-migration` (letters, digits, `-`, `_`; it names the state directory)".into());
            }
        }
        if spec.phases.is_none() {
            self.error("missing-field", top, "missing field `phases`")
                .help =
                Some("a runbook is a list of `phases:`, each with `steps:` or a `gate:`".into());
        }
    }

    fn targets(&mut self, spec: &RunbookSpec) -> IndexMap<String, Target> {
        let mut targets = IndexMap::new();
        for (name, target) in &spec.targets {
            let Some(target) = target.get() else {
                self.broken_targets.insert(name.clone());
                continue;
            };
            let kind = match &target.value {
                TargetSpec::Docker(docker) => {
                    if let Some(host) = &docker.host
                        && let Some(problem) = check_scheme(
                            &host.value,
                            &["unix://", "tcp://", "http://", "https://", "ssh://"],
                        )
                    {
                        self.error("bad-url", host.span, format!("Docker host {problem}"))
                            .help = Some(
                            "write `unix:///var/run/docker.sock`, `tcp://host:2376` or `ssh://user@host`"
                                .into(),
                        );
                    } else if let Some(host) = docker.host.as_ref()
                        && let Some(url) = host.value.as_literal()
                        && url.starts_with("ssh://")
                        && let Err(e) = crate::backend::ssh::SshDestination::parse(url)
                    {
                        self.error("bad-url", host.span, e.to_string()).help =
                            Some("write `ssh://user@host` or `ssh://user@host:2222`".into());
                    }
                    if let Some(context) = &docker.context
                        && context.value.trim().is_empty()
                    {
                        self.error("bad-value", context.span, "`context` is empty")
                            .help = Some(
                            "name a Docker context (`docker context ls`), or leave `context` out"
                                .into(),
                        );
                    }
                    if let Some(ssh) = &docker.ssh
                        && let Some(host) = docker.host.as_ref()
                        && let Some(url) = host.value.as_literal()
                        && !url.starts_with("ssh://")
                        && [&ssh.identity, &ssh.known_hosts]
                            .into_iter()
                            .any(|f| f.as_ref().is_some_and(|t| t.as_literal() != Some("")))
                    {
                        self.diagnostics.push(Diagnostic::warning(
                            "unused-ssh",
                            host.span,
                            format!("`ssh:` settings are used only by an ssh:// host, and this one is `{url}`"),
                        ));
                    }
                    if let (Some(host), Some(context)) = (&docker.host, &docker.context) {
                        let d = self.error(
                            "conflicting-fields",
                            context.span,
                            "a Docker target gives either `host` or `context`, not both",
                        );
                        d.related.push((host.span, "host given here".into()));
                    }
                    TargetKind::Docker
                }
                TargetSpec::Redis(redis) => {
                    if let Some(via) = &redis.via
                        && let Some(url) = redis.url.value.as_literal()
                        && (url.starts_with("unix://")
                            || url.starts_with("redis+unix://")
                            || crate::backend::redis::is_tls_url(url))
                    {
                        self.error(
                            "bad-via",
                            via.span,
                            "through an SSH host redis-move forwards a TCP address without TLS (the SSH connection encrypts the path)",
                        )
                        .help = Some("give the server's `redis://host:port` as the SSH host sees it".into());
                    }
                    if let Some(problem) = check_scheme(
                        &redis.url.value,
                        &[
                            "redis://",
                            "rediss://",
                            "unix://",
                            "redis+unix://",
                            "valkey://",
                            "valkeys://",
                        ],
                    ) {
                        self.error("bad-url", redis.url.span, format!("Redis URL {problem}"))
                            .help = Some("write `redis://[user:password@]host:port[/db]`, `rediss://...` for TLS, or `unix:///path/redis.sock`".into());
                    }
                    if redis.cluster.as_ref().is_some_and(|c| c.fields().is_some()) {
                        self.cluster_targets.insert(name.clone());
                        self.cluster_target(redis);
                        if redis.sentinel.is_some() {
                            self.error(
                                "cluster-target",
                                redis.url.span,
                                "a target is a cluster or behind Sentinel, not both",
                            );
                        }
                    }
                    if redis.sentinel.is_some() {
                        self.sentinel_targets.insert(name.clone());
                    }
                    TargetKind::Redis
                }
            };
            self.targets.insert(name.clone(), (kind, target.span));
            targets.insert(
                name.clone(),
                Target {
                    name: name.clone(),
                    kind,
                    spec: target.value.clone(),
                    span: target.span,
                },
            );
        }
        // Where a Redis target runs names a Docker target (known once all are read).
        for target in spec.targets.values() {
            if let Some(TargetSpec::Redis(redis)) = target.get().map(|t| &t.value)
                && let Some(docker) = redis.container.as_ref().and_then(|c| c.docker.as_ref())
            {
                self.check_target_ref(docker, TargetKind::Docker, "container");
            }
            if let Some(TargetSpec::Redis(redis)) = target.get().map(|t| &t.value)
                && let Some(via) = &redis.via
                && self
                    .check_target_ref(via, TargetKind::Docker, "via")
                    .is_some()
                && let Some(TargetSpec::Docker(docker)) = spec
                    .targets
                    .get(&via.value)
                    .and_then(|t| t.get())
                    .map(|t| &t.value)
                && let Some(host) = docker.host.as_ref().and_then(|h| h.value.as_literal())
                && !host.starts_with("ssh://")
                && !host.starts_with("unix://")
            {
                let d = self.error(
                    "bad-via",
                    via.span,
                    format!(
                        "Redis cannot be reached through `{}`: its Docker host `{host}` is not an ssh:// host, and redis-move forwards only through SSH",
                        via.value
                    ),
                );
                d.help = Some(
                    "reach the host over SSH (`host: ssh://user@host`), or drop `via` and give an address redis-move can dial".into(),
                );
            }
        }
        targets
    }

    fn phases(&mut self, spec: &RunbookSpec) -> Vec<Phase> {
        let mut phases = Vec::new();
        let mut phase_spans: HashMap<String, Span> = HashMap::new();
        let Some(spec_phases) = &spec.phases else {
            return phases;
        };
        if spec_phases.value.is_empty() {
            self.error("no-phases", spec_phases.span, "the runbook has no phases");
        }
        for (phase_index, phase) in spec_phases.value.iter().enumerate() {
            let Some(phase) = phase.get() else { continue };
            let id = &phase.value.id;
            if !is_id(&id.value) {
                self.error(
                    "bad-id",
                    id.span,
                    format!("`{}` is not a valid phase id", id.value),
                )
                .help = Some("use letters, digits, `-` and `_`".into());
            }
            if let Some(first) = phase_spans.get(&id.value).copied() {
                let d = self.error(
                    "duplicate-id",
                    id.span,
                    format!("phase id `{}` is used twice", id.value),
                );
                d.related.push((first, "first used here".into()));
            } else {
                phase_spans.insert(id.value.clone(), id.span);
            }
            phases.push(self.phase(phase_index, phase));
        }
        phases
    }

    fn phase(&mut self, phase_index: usize, spec: &Spanned<PhaseSpec>) -> Phase {
        let phase = &spec.value;
        let on_failure = phase.on_failure.unwrap_or_default();
        let mut steps = Vec::new();
        match (&phase.gate, phase.steps.is_empty()) {
            (Some(gate), false) => {
                self.error("gate-and-steps", gate.span, format!("phase `{}` has both `steps:` and `gate:`", phase.id.value))
                    .help = Some("a phase is either a list of steps or a single gate; put the gate in its own phase, or as a step (`- id: go\\n  gate: {...}`)".into());
            }
            (None, true) => {
                self.error(
                    "empty-phase",
                    phase.id.span,
                    format!("phase `{}` has no steps", phase.id.value),
                )
                .help = Some(
                    "add `steps:` or make it a gate phase with `gate: { question: ... }`".into(),
                );
            }
            (Some(gate), true) => {
                let step_spec = StepSpec {
                    id: Some(phase.id.clone()),
                    action: Some(Spanned {
                        span: gate.span,
                        value: Action::Gate(Box::new(gate.value.clone())),
                    }),
                    ..StepSpec::default()
                };
                let spanned = Spanned {
                    span: spec.span,
                    value: step_spec,
                };
                if let Some(step) = self.step(&spanned, Role::PhaseStep, on_failure, None) {
                    self.step_phase.insert(step.id.clone(), (phase_index, 0));
                    steps.push(step);
                }
            }
            (None, false) => {}
        }
        for step in &phase.steps {
            let Some(step) = step.get() else { continue };
            if let Some(step) = self.step(step, Role::PhaseStep, on_failure, None) {
                self.step_phase
                    .insert(step.id.clone(), (phase_index, steps.len()));
                steps.push(step);
            }
        }
        let rollback =
            self.rollback_steps(&phase.rollback, &format!("{}.rollback", phase.id.value));
        if phase.gate.is_some() && phase.rollback_scope == super::spec::RollbackScope::Phase {
            self.error(
                "scope-on-gate",
                phase.id.span,
                format!(
                    "gate phase `{}` has `rollback_scope: phase`, but a gate changes nothing: its no-go would undo nothing",
                    phase.id.value
                ),
            )
            .help = Some("leave `rollback_scope` out of the gate phase; a no-go then rolls back the run".into());
        }
        for target in &phase.rollback_targets {
            if !self.targets.contains_key(&target.value) {
                let mut known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
                known.sort_unstable();
                let d = unknown_name(
                    "unknown-target",
                    target.span,
                    "target",
                    &target.value,
                    &known,
                );
                self.diagnostics.push(d);
            }
        }
        Phase {
            id: phase.id.value.clone(),
            title: phase.title.clone(),
            on_failure,
            parallel: phase.parallel.and_then(|p| p.0),
            steps,
            rollback,
            rollback_targets: phase
                .rollback_targets
                .iter()
                .map(|t| t.value.clone())
                .collect(),
            rollback_scope: phase.rollback_scope,
            span: spec.span,
        }
    }

    fn rollback_steps(
        &mut self,
        specs: &[super::de::Lenient<Spanned<StepSpec>>],
        prefix: &str,
    ) -> Vec<Step> {
        let specs: Vec<&Spanned<StepSpec>> = specs.iter().filter_map(|s| s.get()).collect();
        let count = specs.len();
        specs
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let auto = if count == 1 {
                    prefix.to_owned()
                } else {
                    format!("{prefix}-{}", i + 1)
                };
                self.step(s, Role::Rollback, OnFailure::Continue, Some(auto))
            })
            .collect()
    }

    /// Converts one step. `auto_id` names steps that may omit `id`.
    fn step(
        &mut self,
        spec: &Spanned<StepSpec>,
        role: Role,
        on_failure: OnFailure,
        auto_id: Option<String>,
    ) -> Option<Step> {
        let s = &spec.value;
        let action = s.action.as_ref()?;
        let id = match (&s.id, auto_id) {
            (Some(id), _) => {
                if !is_id(&id.value) {
                    self.error("bad-id", id.span, format!("`{}` is not a valid step id", id.value))
                        .help = Some("use letters, digits, `-` and `_` (ids appear in `${steps.ID.value}` and `--from`)".into());
                }
                if role == Role::PhaseStep || role == Role::Rollback {
                    if let Some(first) = self.step_spans.get(&id.value).copied() {
                        let d = self.error(
                            "duplicate-id",
                            id.span,
                            format!("step id `{}` is used twice", id.value),
                        );
                        d.related.push((first, "first used here".into()));
                    } else {
                        self.step_spans.insert(id.value.clone(), id.span);
                    }
                }
                id.value.clone()
            }
            (None, Some(auto)) => auto,
            (None, None) => {
                self.error("missing-id", action.span, format!("this `{}` step has no `id`", action.value.name()))
                    .help = Some("give every step an `id:`; ids name steps in plans, reports, `--from` and `${steps.ID.value}`".into());
                return None;
            }
        };
        let params = action.value.params();
        let name = action.value.name();
        for (field, problem) in params.check() {
            self.error(
                "invalid-action",
                action.span,
                format!("`{name}`: {problem}"),
            )
            .label = Some(format!("in `{field}`"));
        }
        let target = self.resolve_target(&action.value, action.span);
        // A move whose source is its own target (the target left implicit, say).
        let source = match &action.value {
            Action::RedisReplicate(p) => Some((&p.source, "replicates")),
            Action::RedisPromote(p) => Some((&p.source, "promotes against")),
            Action::RedisCopy(p) if p.rename.is_none() => Some((&p.source, "copies onto")),
            Action::RedisVerify(p) if p.rename.is_none() => Some((&p.source, "compares with")),
            _ => None,
        };
        if let (Some((source, verb)), Some(target)) = (source, &target)
            && &source.value == target
            && params.check().is_empty()
        {
            self.error(
                "source-is-target",
                source.span,
                format!("`{name}` {verb} itself: `{target}` is both its source and its target"),
            )
            .help = Some(match &action.value {
                Action::RedisCopy(_) => "name another `target:`, or add `rename:` to copy keys under new names on the same server".into(),
                Action::RedisVerify(_) => "a server always equals itself: name the copy's `target:`, or the `rename:` the copy applied".into(),
                _ => "name the other server with `target:` (the runbook's only redis target is taken when none is given)".into(),
            });
        }
        for other in params.other_targets() {
            self.check_target_ref(other, TargetKind::Redis, name);
        }
        self.check_cluster_use(action, target.as_deref());
        for docker in params.docker_targets() {
            self.check_target_ref(docker, TargetKind::Docker, name);
        }

        let effect = params.effect();
        let shape = params.shape();
        if role == Role::PhaseStep {
            self.step_shapes.insert(id.clone(), shape);
        }
        match role {
            Role::Probe if effect != Effect::ReadOnly => {
                self.error("mutating-probe", action.span, format!("`{name}` is not read-only; a probe must only read"))
                    .help = Some("probes run repeatedly (triggers) or decide whether to skip a step (`skip_if`); use a read-only action, or mark a command `read_only: true`".into());
            }
            Role::Rollback if matches!(action.value, Action::Gate(_)) => {
                self.error("gate-in-rollback", action.span, "a rollback cannot stop at a gate; use `manual:` for a step the operator must do");
            }
            _ => {}
        }

        self.check_checks(s, &action.value, shape, action.span);

        let rollback = match (&s.rollback, role) {
            (Some(r), Role::PhaseStep) => match &r.value {
                RollbackSpec::Nothing => StepRollback::Declined,
                RollbackSpec::Steps(steps) => {
                    let count = steps.len();
                    StepRollback::Steps(
                        steps
                            .iter()
                            .enumerate()
                            .filter_map(|(i, st)| {
                                let auto = if count == 1 {
                                    format!("{id}.rollback")
                                } else {
                                    format!("{id}.rollback-{}", i + 1)
                                };
                                self.step(st, Role::Rollback, OnFailure::Continue, Some(auto))
                            })
                            .collect(),
                    )
                }
            },
            (Some(r), _) => {
                self.error(
                    "nested-rollback",
                    r.span,
                    "only steps of a phase have their own `rollback:`",
                );
                StepRollback::NotNeeded
            }
            (None, Role::PhaseStep) => match params.inverse() {
                Inverse::NotNeeded => StepRollback::NotNeeded,
                Inverse::Builtin(text) => StepRollback::Builtin(text),
                Inverse::Missing => {
                    self.diagnostics.push(
                        Diagnostic::warning(
                            "no-rollback",
                            s.id.as_ref().map(|i| i.span).unwrap_or(action.span),
                            format!("step `{id}` changes something (`{name}`) but has no rollback"),
                        )
                        .with_help("add `rollback:` with the steps that undo it, or `rollback: none` if nothing needs undoing"),
                    );
                    StepRollback::Missing
                }
            },
            (None, _) => StepRollback::NotNeeded,
        };

        let skip_if = s.skip_if.as_ref().and_then(|probe| {
            if probe.value.expect.is_none() {
                self.error("skip-if-without-expect", probe.span, "`skip_if` needs an `expect:` saying when the step's effect is already in place");
            }
            self.step(probe, Role::Probe, OnFailure::Continue, Some(format!("{id}.skip_if"))).map(Box::new)
        });

        if role != Role::PhaseStep
            && let Some(first) = s.needs.first()
        {
            self.error(
                "needs-outside-phase",
                first.span,
                "`needs` only orders the steps of a phase",
            );
        }

        Some(Step {
            id,
            title: s.title.clone(),
            action: action.value.clone(),
            target,
            expect: s.expect.as_ref().map(|e| e.value.clone()),
            until: s.until.as_ref().map(|e| e.value.clone()),
            retry: s.retry.as_ref().map(|r| r.value.clone()),
            timeout: s.timeout.map(|t| t.0),
            interval: s.interval.map(|t| t.0),
            needs: s.needs.iter().map(|n| n.value.clone()).collect(),
            rollback,
            hint: s.hint.clone(),
            skip_if,
            on_failure: s.on_failure.unwrap_or(on_failure),
            span: spec.span,
        })
    }

    fn check_checks(&mut self, s: &StepSpec, action: &Action, shape: Shape, action_span: Span) {
        let name = action.name();
        if let (Some(expect), Some(until)) = (&s.expect, &s.until) {
            self.error(
                "expect-and-until",
                until.span,
                "a step has `expect` (checked once) or `until` (polled), not both",
            )
            .related
            .push((expect.span, "`expect` is here".into()));
        }
        if let Some(until) = &s.until
            && s.timeout.is_none()
        {
            self.error(
                "until-without-timeout",
                until.span,
                "`until` needs a `timeout` (how long to keep polling)",
            );
        }
        if let Some(retry) = &s.retry
            && retry.value.attempts < 2
        {
            self.error(
                "bad-retry",
                retry.span,
                "`retry.attempts` counts every attempt, the first included: use 2 or more",
            );
        }
        if let Some(retry) = &s.retry
            && retry
                .value
                .backoff
                .is_some_and(|b| !(1.0..=10.0).contains(&b))
        {
            self.error("bad-retry", retry.span, "`retry.backoff` multiplies the interval after each attempt: use a number from 1 to 10");
        }
        if matches!(action, Action::Assert(_)) && s.expect.is_none() && s.until.is_none() {
            self.error(
                "assert-without-expect",
                action_span,
                "`assert` checks a value: add `expect:`",
            );
        }
        for check in [&s.expect, &s.until].into_iter().flatten() {
            if shape == Shape::Nothing {
                self.error(
                    "nothing-to-check",
                    check.span,
                    format!("`{name}` yields no value to check"),
                );
                continue;
            }
            for problem in check_shape(&check.value, shape) {
                self.error(
                    "expect-mismatch",
                    check.span,
                    format!("`{name}`: {problem}"),
                );
            }
            for q in check.value.quantities() {
                if let Quantity::Ratio(_) = q {
                    self.error(
                        "ratio-in-expect",
                        check.span,
                        format!("`{q}` is a ratio; ratios belong in a trigger's `rate:`"),
                    );
                }
            }
        }
    }

    fn resolve_target(&mut self, action: &Action, span: Span) -> Option<String> {
        let params = action.params();
        let kind = params.target_kind()?;
        if let Some(explicit) = params.target() {
            return self.check_target_ref(explicit, kind, action.name());
        }
        let candidates: Vec<&String> = self
            .targets
            .iter()
            .filter(|(_, (k, _))| *k == kind)
            .map(|(n, _)| n)
            .collect();
        match (candidates.len(), kind) {
            (1, _) => Some(candidates[0].clone()),
            // The one meant may be a target that did not read (its error says why).
            (0, _) if !self.broken_targets.is_empty() => None,
            (0, TargetKind::Docker) => None,
            (0, TargetKind::Redis) => {
                self.error("missing-target", span, format!("`{}` needs a redis target, and the runbook declares none", action.name()))
                    .help = Some("declare one under `targets:` (e.g. `cache: { redis: { url: \"redis://host:6379\" } }`)".into());
                None
            }
            _ => {
                let names: Vec<&str> = candidates.iter().map(|s| s.as_str()).collect();
                let help = format!("add `target:` naming one of {}", backticked(&names));
                self.error(
                    "ambiguous-target",
                    span,
                    format!(
                        "`{}` has no `target:` and the runbook has several {kind} targets",
                        action.name()
                    ),
                )
                .help = Some(help);
                None
            }
        }
    }

    /// What a cluster target cannot have: a forward through SSH (its nodes announce
    /// their own addresses), a database other than 0, a unix socket.
    fn cluster_target(&mut self, redis: &crate::runbook::spec::RedisTargetSpec) {
        if let Some(via) = &redis.via {
            self.error(
                "cluster-target",
                via.span,
                "a cluster's nodes are reached at the addresses they announce: `via` cannot forward to them",
            )
            .help = Some("run redis-move where it reaches the nodes, or drop `cluster:` to act on one node".into());
        }
        let url = redis.url.value.as_literal().unwrap_or_default();
        let db_in_url = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .is_some_and(|(_, db)| !db.is_empty() && db != "0");
        if redis.db.is_some_and(|db| db != 0) || db_in_url {
            self.error(
                "cluster-target",
                redis.url.span,
                "a Redis Cluster has one database (0)",
            );
        }
        if url.starts_with("unix://") || url.starts_with("redis+unix://") {
            self.error(
                "cluster-target",
                redis.url.span,
                "a cluster target is reached over TCP: give one node's `redis://host:port`",
            );
        }
    }

    /// Actions that need one server on each side refuse a cluster, and the cluster check
    /// needs one.
    fn check_cluster_use(&mut self, action: &Spanned<Action>, target: Option<&str>) {
        let params = action.value.params();
        let named: Vec<String> = target
            .map(str::to_owned)
            .into_iter()
            .chain(params.other_targets().iter().map(|t| t.value.clone()))
            .filter(|t| self.cluster_targets.contains(t))
            .collect();
        let name = action.value.name();
        match &action.value {
            Action::RedisSync(p)
                if !named.is_empty() && p.load == crate::runbook::action::SyncLoad::Replication =>
            {
                self.error(
                    "cluster-target",
                    action.span,
                    format!(
                        "`load: replication` makes the target a replica of redis-move serving one server's RDB, and `{}` is a cluster",
                        named.join("`, `")
                    ),
                )
                .help = Some("leave out `load` (keys into or out of a cluster are written with RESTORE)".into());
            }
            Action::RedisReplicate(_) | Action::RedisPromote(_) | Action::RedisSnapshot(_)
                if !named.is_empty() =>
            {
                self.error(
                    "cluster-target",
                    action.span,
                    format!(
                        "`{name}` works with one server, and `{}` is a cluster",
                        named.join("`, `")
                    ),
                )
                .help = Some(
                    "move keys into or out of a cluster with `redis.copy` (routed by slot, every key checked again after it) and `redis.verify`".into(),
                );
            }
            Action::RedisFailover(_)
                if target.is_some_and(|t| !self.sentinel_targets.contains(t)) =>
            {
                self.error(
                    "sentinel-target",
                    action.span,
                    format!(
                        "`{name}` moves a primary that Sentinels manage, and `{}` has no `sentinel:`",
                        target.unwrap_or_default()
                    ),
                )
                .help = Some("declare the target with `sentinel: { addresses: [host:26379, ...], master: NAME }`".into());
            }
            Action::RedisClusterCheck(_)
                if target.is_some_and(|t| !self.cluster_targets.contains(t)) =>
            {
                self.error(
                    "cluster-target",
                    action.span,
                    format!(
                        "`{name}` checks a Redis Cluster, and `{}` is not one",
                        target.unwrap_or_default()
                    ),
                )
                .help = Some("declare the target with `cluster: true`".into());
            }
            _ => {}
        }
    }

    /// A webhook written in the runbook must be an http(s) URL (one that comes from a
    /// secret is checked when the run starts).
    fn check_notify(&mut self, spec: &RunbookSpec) {
        for (i, notify) in spec.notify.iter().enumerate() {
            let Some(url) = notify.value.webhook.as_literal() else {
                continue;
            };
            if let Some(problem) = webhook_problem(url) {
                self.error(
                    "bad-url",
                    notify.span,
                    format!("`notify` webhook #{}: {problem}", i + 1),
                )
                .help = Some("give `https://host/path` (or `http://`)".into());
            }
        }
    }

    /// The lease lock: a Redis target, a lease long enough to be renewed.
    fn lock(&mut self, spec: &RunbookSpec) -> Option<crate::runbook::model::LeaseLock> {
        let lock = spec.lock.as_ref()?;
        let target = self.check_target_ref(&lock.value.redis, TargetKind::Redis, "lock")?;
        let ttl = lock
            .value
            .ttl
            .as_ref()
            .map_or(std::time::Duration::from_secs(30), |t| t.0);
        if ttl < std::time::Duration::from_secs(3) {
            self.error(
                "bad-lock",
                lock.span,
                format!(
                    "a lease of {} cannot be renewed in time (every third of it)",
                    crate::runbook::units::format_duration(ttl)
                ),
            )
            .help = Some("give `ttl: 3s` or more (default 30s; a longer lease outlasts a longer stall of the network)".into());
        }
        if let Some(key) = &lock.value.key
            && (key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            self.error(
                "bad-lock",
                lock.span,
                format!("the lease key {key:?} is empty or holds spaces or control characters"),
            )
            .help = Some("leave `key` out (default `redis-move:lock:<name>`) or give a plain name such as `redis-move:lock:prod`".into());
        }
        let name = spec.name.as_ref().map_or("", |n| n.value.as_str());
        Some(crate::runbook::model::LeaseLock {
            target,
            key: lock
                .value
                .key
                .clone()
                .unwrap_or_else(|| format!("redis-move:lock:{name}")),
            ttl,
        })
    }

    fn check_target_ref(
        &mut self,
        reference: &Spanned<String>,
        kind: TargetKind,
        action: &str,
    ) -> Option<String> {
        match self.targets.get(&reference.value) {
            Some((actual, declared)) if *actual == kind => Some(reference.value.clone()),
            Some((actual, declared)) => {
                let declared = *declared;
                let actual = *actual;
                let d = self.error(
                    "target-kind",
                    reference.span,
                    format!(
                        "`{action}` acts on a {kind} target, but `{}` is a {actual} target",
                        reference.value
                    ),
                );
                d.related.push((declared, "declared here".into()));
                None
            }
            None if self.broken_targets.contains(&reference.value) => None,
            None => {
                let known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
                let d = unknown_name(
                    "unknown-target",
                    reference.span,
                    "target",
                    &reference.value,
                    &known,
                );
                self.diagnostics.push(d);
                None
            }
        }
    }

    fn graphs(&mut self, phases: &[Phase]) -> Vec<PhaseGraph> {
        let mut graphs = Vec::new();
        for (phase_index, phase) in phases.iter().enumerate() {
            let index_of: HashMap<&str, usize> = phase
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect();
            let mut needs = vec![Vec::new(); phase.steps.len()];
            for (i, step) in phase.steps.iter().enumerate() {
                let spec_needs = step.needs.iter();
                for need in spec_needs {
                    let span = step.span;
                    match index_of.get(need.as_str()) {
                        Some(&j) if j == i => {
                            self.error(
                                "needs-itself",
                                span,
                                format!("step `{}` needs itself", step.id),
                            );
                        }
                        Some(&j) if phase.parallel.is_none() && j > i => {
                            self.error("needs-later-step", span, format!("step `{}` needs `{need}`, which is declared after it in sequential phase `{}`", step.id, phase.id))
                                .help = Some("move the step, or set `parallel: true` on the phase so that only `needs` orders its steps".into());
                        }
                        Some(&j) => needs[i].push(j),
                        None => match self.step_phase.get(need.as_str()) {
                            Some((other, _)) if *other < phase_index => {
                                self.diagnostics.push(Diagnostic::warning(
                                    "needless-needs",
                                    span,
                                    format!("step `{}` needs `{need}` from an earlier phase; phases are barriers, so this is always true", step.id),
                                ));
                            }
                            Some(_) => {
                                self.error(
                                    "needs-later-phase",
                                    span,
                                    format!(
                                        "step `{}` needs `{need}`, which is in a later phase",
                                        step.id
                                    ),
                                );
                            }
                            None => {
                                let known: Vec<&str> =
                                    phase.steps.iter().map(|s| s.id.as_str()).collect();
                                let d = unknown_name("unknown-step", span, "step", need, &known);
                                self.diagnostics.push(d);
                            }
                        },
                    }
                }
            }
            let graph = PhaseGraph::new(phase.steps.len(), &needs, phase.parallel.is_none());
            for cycle in &graph.cycles {
                let names: Vec<&str> = cycle.iter().map(|i| phase.steps[*i].id.as_str()).collect();
                let span = phase.steps[cycle[0]].span;
                self.error(
                    "needs-cycle",
                    span,
                    format!(
                        "steps of phase `{}` wait for each other in a cycle: {}",
                        phase.id,
                        names.join(" -> ")
                    ),
                )
                .help = Some("remove one of these `needs`".into());
            }
            graphs.push(graph);
        }
        graphs
    }

    fn triggers(&mut self, spec: &RunbookSpec, phases: &[Phase]) -> Vec<Trigger> {
        let phase_ids: Vec<&str> = phases.iter().map(|p| p.id.as_str()).collect();
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut triggers = Vec::new();
        for trigger in &spec.triggers {
            let Some(t) = trigger.get() else { continue };
            let spec = &t.value;
            if let Some(first) = seen.get(&spec.id.value).copied() {
                let d = self.error(
                    "duplicate-id",
                    spec.id.span,
                    format!("trigger id `{}` is used twice", spec.id.value),
                );
                d.related.push((first, "first used here".into()));
            } else {
                seen.insert(spec.id.value.clone(), spec.id.span);
            }
            for phase in &spec.during {
                if !phase_ids.contains(&phase.value.as_str()) {
                    let d = unknown_name(
                        "unknown-phase",
                        phase.span,
                        "phase",
                        &phase.value,
                        &phase_ids,
                    );
                    self.diagnostics.push(d);
                }
            }
            for step in [&spec.from, &spec.until].into_iter().flatten() {
                if !self.step_phase.contains_key(&step.value) {
                    let known: Vec<&str> = self.step_phase.keys().map(String::as_str).collect();
                    let mut known = known;
                    known.sort_unstable();
                    let d = unknown_name("unknown-step", step.span, "step", &step.value, &known);
                    self.diagnostics.push(d);
                }
            }
            let window = Window {
                phases: spec.during.iter().map(|p| p.value.clone()).collect(),
                from: spec.from.as_ref().map(|s| s.value.clone()),
                until: spec.until.as_ref().map(|s| s.value.clone()),
                duration: spec.window.map(|d| d.0),
            };
            if window.is_unbounded() {
                self.diagnostics.push(
                    Diagnostic::warning(
                        "trigger-without-window",
                        spec.id.span,
                        format!(
                            "trigger `{}` has no window: it is watched for the whole run",
                            spec.id.value
                        ),
                    )
                    .with_help("limit it with `during: [phase, ...]`, or `from:`/`until:` steps"),
                );
            }
            let probe = self.step(
                &spec.probe,
                Role::Probe,
                OnFailure::Continue,
                Some(format!("{}.probe", spec.id.value)),
            );
            let probe_shape = probe
                .as_ref()
                .map(|p| p.action.params().shape())
                .unwrap_or(Shape::Any);
            let mut fire = self.fire_condition(spec, probe_shape);
            if let (
                Some(FireCondition::Rate {
                    baseline: Baseline::Before { probe, .. },
                    ..
                }),
                Some(baseline_probe),
            ) = (&mut fire, &spec.fire.value.baseline_probe)
            {
                *probe = self
                    .step(
                        baseline_probe,
                        Role::Probe,
                        OnFailure::Continue,
                        Some(format!("{}.baseline_probe", spec.id.value)),
                    )
                    .map(Box::new);
            }
            let every = spec.every.map(|d| d.0).unwrap_or(DEFAULT_TRIGGER_INTERVAL);
            if every.is_zero() {
                self.error(
                    "bad-interval",
                    spec.id.span,
                    "`every` must be longer than 0s",
                );
            }
            if let (Some(probe), Some(fire)) = (probe, fire) {
                triggers.push(Trigger {
                    id: spec.id.value.clone(),
                    title: spec.title.clone(),
                    window,
                    probe,
                    every,
                    timeout: spec.timeout.map(|d| d.0).unwrap_or(every),
                    fire,
                    on_no_data: spec.on_no_data.unwrap_or(DataPolicy::Fail),
                    on_error: spec.on_error.unwrap_or(DataPolicy::Fail),
                    mode: spec.mode,
                    action: spec.action,
                    hint: spec.hint.clone(),
                    field: spec
                        .fire
                        .value
                        .field
                        .as_deref()
                        .map(|f| f.split('.').map(str::to_owned).collect())
                        .unwrap_or_default(),
                    span: t.span,
                });
            }
        }
        triggers
    }

    fn fire_condition(&mut self, spec: &TriggerSpec, shape: Shape) -> Option<FireCondition> {
        let fire: &FireSpec = &spec.fire.value;
        let span = spec.fire.span;
        let given: Vec<&str> = [
            ("when", fire.when.is_some()),
            ("failing_for", fire.failing_for.is_some()),
            ("increase", fire.increase.is_some()),
            ("rate", fire.rate.is_some()),
            ("consecutive", fire.consecutive.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
        .collect();
        if given.len() != 1 {
            let message = if given.is_empty() {
                "`fire` has no condition".to_owned()
            } else {
                format!(
                    "`fire` has several conditions ({}); a trigger has exactly one",
                    backticked(&given)
                )
            };
            self.error("fire-condition", span, message).help =
                Some("use one of `when: \"> 7GB\"`, `failing_for: 30s`, `increase: \"> 100\"` + `within: 5min`, `rate: \"> 10x\"` + `baseline`, `consecutive: 2`".into());
            return None;
        }
        if fire.within.is_some() && fire.increase.is_none() {
            self.error("fire-condition", span, "`within` belongs to `increase`");
        }
        if (fire.baseline.is_some()
            || fire.baseline_window.is_some()
            || fire.baseline_before.is_some()
            || fire.baseline_floor.is_some())
            && fire.rate.is_none()
        {
            self.error(
                "fire-condition",
                span,
                "`baseline`, `baseline_window` and `baseline_before` belong to `rate`",
            );
        }
        if fire.baseline_window.is_some_and(|w| w.0.is_zero()) {
            self.error(
                "fire-condition",
                span,
                "`baseline_window` must be longer than 0s (the stretch the baseline rate is measured over)",
            );
        }
        if fire.within.is_some_and(|w| w.0.is_zero()) {
            self.error(
                "fire-condition",
                span,
                "`within` must be longer than 0s (the sliding window of `increase`)",
            );
        }
        if let Some(step) = &fire.baseline_before {
            if !self.step_phase.contains_key(&step.value) {
                let mut known: Vec<&str> = self.step_phase.keys().map(String::as_str).collect();
                known.sort_unstable();
                let d = unknown_name("unknown-step", step.span, "step", &step.value, &known);
                self.diagnostics.push(d);
            }
            if fire.baseline_window.is_none() {
                self.error(
                    "fire-condition",
                    step.span,
                    "`baseline_before` needs `baseline_window` (how long a stretch before the step, e.g. `5min`)",
                );
            }
        }
        if let (Some(probe), None) = (&fire.baseline_probe, &fire.baseline_before) {
            self.error(
                "fire-condition",
                probe.span,
                "`baseline_probe` belongs to `baseline_before` (it measures the rate before that step)",
            );
        }
        let shape = match &fire.field {
            Some(path) => {
                if let Some(problem) = missing_field(shape, path) {
                    self.error(
                        "expect-mismatch",
                        span,
                        format!("`field: {path}`: {problem}"),
                    );
                    return None;
                }
                field_shape(shape, path)
            }
            None => shape,
        };
        if let Some(when) = &fire.when {
            for problem in check_shape(when, shape) {
                self.error("expect-mismatch", span, format!("`when`: {problem}"));
            }
            return Some(FireCondition::Threshold(when.clone()));
        }
        if let Some(d) = fire.failing_for {
            return Some(FireCondition::FailingFor(d.0));
        }
        // `increase` and `rate` measure change over time: they need a number (`increase`
        // may also name the fields it follows: `{ total: { failed: "> 100" } }`).
        let increase_on_fields = matches!(fire.increase, Some(Expect::Field { .. }));
        if (fire.increase.is_some() && !increase_on_fields) || fire.rate.is_some() {
            let kind = match shape {
                Shape::Object(_) => Some("an object"),
                Shape::List(_) => Some("a list"),
                Shape::Text => Some("text"),
                Shape::Bool => Some("a boolean"),
                Shape::Nothing => Some("no value"),
                _ => None,
            };
            if let Some(kind) = kind {
                let condition = if fire.rate.is_some() {
                    "rate"
                } else {
                    "increase"
                };
                let d = self.error(
                    "fire-condition",
                    span,
                    format!("`{condition}` follows a number over time, but the probe gives {kind}"),
                );
                if let Shape::Object(fields) = shape {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    d.help = Some(format!(
                        "pick a numeric field with `field:` (one of: {})",
                        names.join(", ")
                    ));
                }
                return None;
            }
        }
        if let Some(by) = &fire.increase {
            let Some(within) = fire.within else {
                self.error(
                    "fire-condition",
                    span,
                    "`increase` needs `within` (the sliding window, e.g. `5min`)",
                );
                return None;
            };
            return Some(FireCondition::Increase {
                by: by.clone(),
                within: within.0,
            });
        }
        if let Some(ratio) = &fire.rate {
            let is_ratio = matches!(ratio, Expect::Compare { operand: super::expect::Operand::Known(Quantity::Ratio(_)), op, .. } if op.is_ordering());
            if !is_ratio {
                self.error(
                    "fire-condition",
                    span,
                    format!("`rate: {ratio}` must compare with a ratio, e.g. `\"> 10x\"`"),
                );
            }
            let baseline = match (&fire.baseline, fire.baseline_window) {
                (Some(b), None) => Baseline::Recorded(b.clone()),
                (None, Some(w)) => match &fire.baseline_before {
                    Some(step) => Baseline::Before {
                        step: step.value.clone(),
                        window: w.0,
                        probe: None,
                    },
                    None => Baseline::Measured(w.0),
                },
                _ => {
                    self.error("fire-condition", span, "`rate` needs exactly one of `baseline` (a recorded rate) or `baseline_window` (measure it first)");
                    return None;
                }
            };
            let floor = match fire.baseline_floor {
                Some(f) if !(f.is_finite() && f > 0.0) => {
                    self.error(
                        "fire-condition",
                        span,
                        format!("`baseline_floor: {f}` must be a rate above 0 (per second)"),
                    );
                    return None;
                }
                Some(f) => f,
                None => DEFAULT_BASELINE_FLOOR,
            };
            return Some(FireCondition::Rate {
                ratio: ratio.clone(),
                baseline,
                floor,
            });
        }
        match fire.consecutive {
            Some(0) => {
                self.error("fire-condition", span, "`consecutive` must be at least 1");
                None
            }
            Some(n) => Some(FireCondition::Consecutive(n)),
            None => None,
        }
    }

    /// Checks `${secrets.x}` and `${steps.x.value}` everywhere, with the rules of the
    /// place they are used in.
    fn check_references(&mut self, root: &Node, phases: &[Phase], graphs: &[PhaseGraph]) {
        let Some(entries) = root.as_map() else { return };
        for (key, value) in entries {
            match key.as_str().unwrap_or("") {
                "vars" => {}
                "phases" => {
                    for (pi, phase_node) in value.as_seq().unwrap_or(&[]).iter().enumerate() {
                        for (k, v) in phase_node.as_map().unwrap_or(&[]) {
                            if k.as_str() == Some("steps") {
                                for step_node in v.as_seq().unwrap_or(&[]) {
                                    let id =
                                        step_node.get("id").and_then(Node::as_str).unwrap_or("");
                                    for (reference, span) in
                                        collect_references(step_node, &["rollback"])
                                    {
                                        self.check_reference(
                                            &reference,
                                            span,
                                            Some((pi, id)),
                                            phases,
                                            graphs,
                                        );
                                    }
                                    if let Some(rollback) = step_node.get("rollback") {
                                        for (reference, span) in collect_references(rollback, &[]) {
                                            self.check_reference(
                                                &reference, span, None, phases, graphs,
                                            );
                                        }
                                    }
                                }
                            } else {
                                for (reference, span) in collect_references(v, &[]) {
                                    self.check_reference(&reference, span, None, phases, graphs);
                                }
                            }
                        }
                    }
                }
                "triggers" | "rollback" => {
                    for (reference, span) in collect_references(value, &[]) {
                        self.check_reference(&reference, span, None, phases, graphs);
                    }
                }
                _ => {
                    for (reference, span) in collect_references(value, &[]) {
                        if let Reference::StepValue { step, .. } = &reference {
                            self.error("step-value-here", span, format!("`${{steps.{step}.value}}` is not available here: step values exist once steps have run"));
                        } else {
                            self.check_reference(&reference, span, None, phases, graphs);
                        }
                    }
                }
            }
        }
    }

    /// Names that `${...}` references and `target:`/`during:` fields use must be
    /// referenceable: letters, digits, `-` and `_` (a var `a.b` could never be read).
    fn check_names(&mut self, root: &Node) {
        for (section, what) in [("vars", "var"), ("secrets", "secret")] {
            let Some(entries) = root.get(section).and_then(Node::as_map) else {
                continue;
            };
            for (key, _) in entries {
                let Some(name) = key.as_str() else { continue };
                if !is_id(name) {
                    self.error(
                        "bad-name",
                        key.span,
                        format!("`{name}` is not a valid {what} name: it could not be referenced"),
                    )
                    .help = Some("use letters, digits, `-` and `_`".into());
                }
            }
        }
        for trigger in root.get("triggers").and_then(Node::as_seq).unwrap_or(&[]) {
            if let Some(id) = trigger.get("id")
                && let Some(name) = id.as_str()
                && !is_id(name)
            {
                self.error(
                    "bad-id",
                    id.span,
                    format!("`{name}` is not a valid trigger id"),
                )
                .help = Some("use letters, digits, `-` and `_`".into());
            }
        }
    }

    /// `redis.sync_status` and `redis.sync_stop` name a `redis.sync` step that runs
    /// before them; every sync is stopped by a `redis.sync_stop` after it (a sync left
    /// running would end with the run, without a drain).
    fn check_syncs(
        &mut self,
        phases: &[Phase],
        graphs: &[PhaseGraph],
        triggers: &[Trigger],
        rollback: &[Step],
    ) {
        use crate::runbook::action::Action;
        let position = |v: &Validator, id: &str| v.step_phase.get(id).copied();
        let runs_before = |a: (usize, usize), b: (usize, usize)| {
            a.0 < b.0 || (a.0 == b.0 && graphs[a.0].runs_before(a.1, b.1))
        };
        let mut users: Vec<(&Step, Option<(usize, usize)>)> = Vec::new();
        for (pi, phase) in phases.iter().enumerate() {
            for (si, step) in phase.steps.iter().enumerate() {
                users.push((step, Some((pi, si))));
            }
        }
        users.extend(triggers.iter().map(|t| (&t.probe, None)));
        users.extend(rollback.iter().map(|s| (s, None)));
        for phase in phases {
            for step in &phase.steps {
                if let crate::runbook::model::StepRollback::Steps(steps) = &step.rollback {
                    users.extend(steps.iter().map(|s| (s, None)));
                }
            }
        }
        let mut stopped: std::collections::HashSet<String> = Default::default();
        for (step, at) in users {
            let (sync, stop) = match &step.action {
                Action::RedisSyncStatus(p) => (&p.sync, None),
                Action::RedisSyncStop(p) => (&p.sync, Some(p)),
                _ => continue,
            };
            let Some(sync_at) = position(self, &sync.value) else {
                let mut known: Vec<&str> = self.step_phase.keys().map(String::as_str).collect();
                known.sort_unstable();
                let mut d = unknown_name("unknown-step", sync.span, "step", &sync.value, &known);
                d.message = format!("`sync: {}` names no step", sync.value);
                self.diagnostics.push(d);
                continue;
            };
            let Action::RedisSync(params) = &phases[sync_at.0].steps[sync_at.1].action else {
                self.error(
                    "not-a-sync",
                    sync.span,
                    format!(
                        "`sync: {}` names a step that is not a `redis.sync`",
                        sync.value
                    ),
                );
                continue;
            };
            if let Some(at) = at
                && !runs_before(sync_at, at)
            {
                self.error(
                    "sync-not-before",
                    sync.span,
                    format!(
                        "the sync `{}` does not run before `{}`, which reads or stops it",
                        sync.value, step.id
                    ),
                )
                .help = Some(format!(
                    "declare `{}` earlier, or add `needs: [{}]` to `{}`",
                    sync.value, sync.value, step.id
                ));
                continue;
            }
            if let Some(stop) = stop {
                if at.is_none() {
                    self.error(
                        "sync-stop-outside-phases",
                        sync.span,
                        format!(
                            "`redis.sync_stop` of `{}` can only be a phase step: a rollback halts the sync itself, and a trigger only reads",
                            sync.value
                        ),
                    );
                    continue;
                }
                stopped.insert(sync.value.clone());
                let same = params
                    .target
                    .as_ref()
                    .is_some_and(|t| t.value == params.source.value);
                if same && stop.pause.is_some() {
                    self.error(
                        "pause-same-server",
                        sync.span,
                        format!(
                            "`{}` syncs a server onto itself: a pause would hold the sync's own writes too",
                            sync.value
                        ),
                    )
                    .help = Some("stop the writers before `redis.sync_stop` (a `docker.stop`), and leave out `pause`".into());
                }
            }
        }
        for phase in phases {
            for step in &phase.steps {
                if matches!(step.action, Action::RedisSync(_)) && !stopped.contains(&step.id) {
                    self.error(
                        "sync-never-stopped",
                        step.span,
                        format!(
                            "the sync `{}` is never stopped: it would end with the run, without applying the source's last writes",
                            step.id
                        ),
                    )
                    .help = Some(format!(
                        "add a step `redis.sync_stop: {{ sync: {} }}` where the writers have moved",
                        step.id
                    ));
                }
            }
        }
    }

    /// `redis.delete` names its backup step: it must exist and run before the delete.
    fn check_backups(&mut self, phases: &[Phase], graphs: &[PhaseGraph]) {
        for (phase_index, phase) in phases.iter().enumerate() {
            for (step_index, step) in phase.steps.iter().enumerate() {
                let crate::runbook::action::Action::RedisDelete(p) = &step.action else {
                    continue;
                };
                let Some(backup) = &p.backup else { continue };
                let Some(&(backup_phase, backup_index)) = self.step_phase.get(&backup.value) else {
                    let mut known: Vec<&str> = self.step_phase.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    let mut d =
                        unknown_name("unknown-step", backup.span, "step", &backup.value, &known);
                    d.message = format!("`backup: {}` names no step", backup.value);
                    self.diagnostics.push(d);
                    continue;
                };
                let before = backup_phase < phase_index
                    || (backup_phase == phase_index
                        && graphs[phase_index].runs_before(backup_index, step_index));
                let backup_step = &phases[backup_phase].steps[backup_index];
                if let Some(problem) = backup_covers(backup_step, step, p) {
                    match problem {
                        Coverage::Wrong(message) => {
                            self.error("backup-not-covering", backup.span, message).help = Some(
                                "name a `redis.snapshot` of the server the keys are deleted from, or a `redis.copy` of them from it".into(),
                            );
                        }
                        Coverage::Unknown(message) => {
                            self.diagnostics.push(
                                Diagnostic::warning("backup-unverified", backup.span, message)
                                    .with_help("a `redis.snapshot` (verified) or a `redis.copy` can be checked; `force: true` says a delete needs no backup"),
                            );
                        }
                    }
                }
                if !before {
                    let d = self.error(
                        "backup-not-before",
                        backup.span,
                        format!(
                            "the backup step `{}` does not run before `{}`, which deletes",
                            backup.value, step.id
                        ),
                    );
                    d.help = Some(format!(
                        "declare `{}` earlier, or add `needs: [{}]` to `{}`",
                        backup.value, backup.value, step.id
                    ));
                }
            }
        }
    }

    /// `user`: the phase index and id of the step using the reference, when ordering
    /// matters (phase steps); `None` for rollback steps and triggers, which run after
    /// (or alongside) the steps and see whatever values exist by then.
    fn check_reference(
        &mut self,
        reference: &Reference,
        span: Span,
        user: Option<(usize, &str)>,
        phases: &[Phase],
        graphs: &[PhaseGraph],
    ) {
        match reference {
            Reference::Secret(name) => {
                if !self.secrets.contains(name) {
                    let known: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
                    let mut d = unknown_name("undefined-secret", span, "secret", name, &known);
                    d.message = format!("`${{secrets.{name}}}` is not defined");
                    if d.help
                        .as_deref()
                        .is_some_and(|h| h.starts_with("this runbook"))
                    {
                        d.help = Some(format!(
                            "declare it under `secrets:` (e.g. `{name}: {{ env: {} }}`)",
                            name.to_ascii_uppercase()
                        ));
                    }
                    self.diagnostics.push(d);
                }
            }
            Reference::StepValue { step, path } => {
                let Some(&(step_phase, step_index)) = self.step_phase.get(step) else {
                    let mut known: Vec<&str> = self.step_phase.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    let mut d = unknown_name("unknown-step", span, "step", step, &known);
                    d.message = format!("`${{steps.{step}.value}}` names no step");
                    self.diagnostics.push(d);
                    return;
                };
                if let Some((user_phase, user_id)) = user {
                    let user_index = self.step_phase.get(user_id).map(|(_, i)| *i);
                    let ordered = step_phase < user_phase
                        || (step_phase == user_phase
                            && user_index
                                .is_some_and(|u| graphs[user_phase].runs_before(step_index, u)));
                    if !ordered && !user_id.is_empty() {
                        let later = step_phase > user_phase;
                        let d = self.error(
                            "value-not-ready",
                            span,
                            if step == user_id {
                                format!("step `{user_id}` uses its own value")
                            } else if later {
                                format!("step `{user_id}` uses the value of `{step}`, which runs in a later phase (`{}`)", phases[step_phase].id)
                            } else {
                                format!("step `{user_id}` uses the value of `{step}`, which may not have run yet")
                            },
                        );
                        if !later && step != user_id {
                            d.help = Some(format!(
                                "add `needs: [{step}]` to `{user_id}`, or declare `{step}` first"
                            ));
                        }
                    }
                }
                if let (Some(first), Some(Shape::Object(fields))) =
                    (path.first(), self.step_shapes.get(step))
                    && !fields.iter().any(|(f, _)| f == first)
                {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    let mut d = unknown_name("unknown-field", span, "field", first, &names);
                    d.message = format!("the value of step `{step}` has no field `{first}`");
                    self.diagnostics.push(d);
                }
            }
            Reference::Var(_) | Reference::Env(_) => {}
        }
    }
}

/// The shape of a dotted field of a value of `shape` (`Any` when unknown).
/// Why `path` names no field of values of `shape` (`None`: it does, or cannot be told).
fn missing_field(shape: Shape, path: &str) -> Option<String> {
    let mut current = shape;
    for part in path.split('.') {
        match current {
            Shape::Object(fields) => match fields.iter().find(|(f, _)| *f == part) {
                Some((_, next)) => current = *next,
                None => {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    return Some(match did_you_mean(part, names.iter().copied()) {
                        Some(best) => {
                            format!("the value has no field `{part}`; did you mean `{best}`?")
                        }
                        None => format!(
                            "the value has no field `{part}`; fields: {}",
                            backticked(&names)
                        ),
                    });
                }
            },
            _ => return None,
        }
    }
    None
}

fn field_shape(shape: Shape, path: &str) -> Shape {
    path.split('.').fold(shape, |current, part| match current {
        Shape::Object(fields) => fields
            .iter()
            .find(|(f, _)| *f == part)
            .map(|(_, s)| *s)
            .unwrap_or(Shape::Any),
        _ => Shape::Any,
    })
}

/// The scheme check of a URL whose text may start with a reference.
fn check_scheme(url: &Template, schemes: &[&str]) -> Option<String> {
    let shown = url.display();
    if url
        .segments()
        .first()
        .is_some_and(|s| matches!(s, super::template::Segment::Ref(_)))
    {
        return None; // `${env.REDIS_URL}`: checked at run time
    }
    if schemes.iter().any(|s| shown.starts_with(s)) {
        None
    } else {
        let scheme = shown
            .split_once("://")
            .map(|(s, _)| format!("`{s}://`"))
            .unwrap_or_else(|| "no scheme".into());
        Some(format!(
            "`{shown}` has {scheme}; expected one of {}",
            backticked(schemes)
        ))
    }
}

/// Every reference in the strings below `node`, skipping `skip` keys of `node` itself
/// and shell script text.
fn collect_references(node: &Node, skip: &[&str]) -> Vec<(Reference, Span)> {
    let mut out = Vec::new();
    collect_into(node, skip, false, &mut out);
    out
}

fn collect_into(node: &Node, skip: &[&str], in_shell: bool, out: &mut Vec<(Reference, Span)>) {
    if let Some(text) = node.as_str() {
        if text.contains("${")
            && let Ok(template) = Template::parse(text)
        {
            out.extend(template.references().map(|r| (r.clone(), node.span)));
        }
        return;
    }
    if let Some(items) = node.as_seq() {
        items
            .iter()
            .for_each(|n| collect_into(n, &[], in_shell, out));
    }
    if let Some(entries) = node.as_map() {
        for (k, v) in entries {
            let key = k.as_str().unwrap_or("");
            if skip.contains(&key) || (in_shell && key == "script") {
                continue;
            }
            collect_into(v, &[], key == "shell", out);
        }
    }
}

/// What is wrong with checking a value of `shape` with `expect`.
pub fn check_shape(expect: &Expect, shape: Shape) -> Vec<String> {
    let mut problems = Vec::new();
    check_shape_into(expect, shape, &mut problems);
    problems
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Any => "any value",
        Shape::Nothing => "nothing",
        Shape::Number => "a number",
        Shape::Bytes => "a size in bytes",
        Shape::Duration => "a duration",
        Shape::Timestamp => "a timestamp",
        Shape::Text => "text",
        Shape::Bool => "a boolean",
        Shape::List(_) => "a list",
        Shape::Object(_) => "an object",
    }
}

fn check_shape_into(expect: &Expect, shape: Shape, problems: &mut Vec<String>) {
    if shape == Shape::Any {
        return;
    }
    match expect {
        Expect::Compare { op, operand, .. } => {
            let super::expect::Operand::Known(q) = operand else {
                return;
            };
            let fits = match (shape, q) {
                (Shape::List(_) | Shape::Object(_), _) => {
                    problems.push(format!(
                        "the value is {}; use `count:`, `each:`, `any:` or a field name before `{op} {q}`",
                        shape_name(shape)
                    ));
                    return;
                }
                (Shape::Number | Shape::Bytes, Quantity::Number(_) | Quantity::Size(_)) => true,
                (Shape::Duration, Quantity::Duration(_)) => true,
                (Shape::Timestamp, Quantity::Timestamp(_)) => true,
                (Shape::Text | Shape::Bool, _) => true,
                (_, Quantity::Text(_)) => !op.is_ordering(),
                (_, Quantity::Ratio(_)) => true, // reported separately
                _ => false,
            };
            if !fits {
                let hint = match shape {
                    Shape::Duration => " (write a unit: `600ms`, `30s`)",
                    Shape::Bytes => " (write a size: `8gb`, or a plain number of bytes)",
                    _ => "",
                };
                problems.push(format!(
                    "the value is {}, but `{op} {q}` compares with {}{hint}",
                    shape_name(shape),
                    q.kind_name()
                ));
            }
        }
        Expect::Empty(_) => {
            if matches!(
                shape,
                Shape::Number | Shape::Bytes | Shape::Duration | Shape::Timestamp
            ) {
                problems.push(format!(
                    "{} is never empty; compare it instead (`== 0`)",
                    shape_name(shape)
                ));
            }
        }
        Expect::Count(inner) => match shape {
            Shape::List(_) | Shape::Object(_) => check_shape_into(inner, Shape::Number, problems),
            _ => problems.push(format!(
                "`count` needs a list, but the value is {}",
                shape_name(shape)
            )),
        },
        Expect::Distinct { field, expect } => match shape {
            Shape::List(Shape::Object(fields)) => {
                if !fields.iter().any(|(f, _)| f == field) {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    problems.push(format!(
                        "`distinct`: the items have no field `{field}`; fields: {}",
                        backticked(&names)
                    ));
                }
                check_shape_into(expect, Shape::Number, problems);
            }
            Shape::List(_) | Shape::Any => check_shape_into(expect, Shape::Number, problems),
            _ => problems.push(format!(
                "`distinct` needs a list of objects, but the value is {}",
                shape_name(shape)
            )),
        },
        Expect::Each(inner) | Expect::Any(inner) | Expect::NoneOf(inner) => match shape {
            Shape::List(item) => check_shape_into(inner, *item, problems),
            _ => problems.push(format!(
                "`each`/`any`/`none` need a list, but the value is {}",
                shape_name(shape)
            )),
        },
        Expect::Field { name, .. }
            if did_you_mean(name, EXPECT_KEYWORDS.iter().copied()).is_some()
                && !matches!(shape, Shape::Object(fields) if fields.iter().any(|(f, _)| f == name)) =>
        {
            let keyword = did_you_mean(name, EXPECT_KEYWORDS.iter().copied()).unwrap_or_default();
            problems.push(format!(
                "`{name}` is neither a test nor a field of the value; did you mean `{keyword}`?"
            ));
        }
        Expect::Field { name, expect } => match shape {
            Shape::Object(fields) => match fields.iter().find(|(f, _)| f == name) {
                Some((_, field_shape)) => check_shape_into(expect, *field_shape, problems),
                None => {
                    let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                    let suggestion = match did_you_mean(name, names.iter().copied()) {
                        Some(best) => format!("; did you mean `{best}`?"),
                        None => format!("; fields: {}", backticked(&names)),
                    };
                    problems.push(format!("the value has no field `{name}`{suggestion}"));
                }
            },
            Shape::List(_) => problems.push(format!(
                "the value is a list; use `each:` or `any:` before the field `{name}`"
            )),
            _ => problems.push(format!(
                "the value is {}, which has no field `{name}`",
                shape_name(shape)
            )),
        },
        Expect::All(all) => all
            .iter()
            .for_each(|e| check_shape_into(e, shape, problems)),
        Expect::Text { .. } | Expect::Matches { .. } => {}
    }
}

/// Why a delete's backup step does not cover it.
enum Coverage {
    /// It backs up something else.
    Wrong(String),
    /// It cannot be told (not a snapshot or a copy).
    Unknown(String),
}

/// Whether `backup` (a step) backs up what `delete` deletes: a snapshot of the same
/// server, or a copy from that server whose pattern takes every key the delete matches.
fn backup_covers(
    backup: &Step,
    delete: &Step,
    params: &crate::runbook::action::DeleteParams,
) -> Option<Coverage> {
    use crate::runbook::action::Action;
    let deleted_from = delete.target.as_deref()?;
    match &backup.action {
        Action::RedisSnapshot(snapshot) => match backup.target.as_deref() {
            Some(server) if server != deleted_from => Some(Coverage::Wrong(format!(
                "`{}` is a snapshot of `{server}`, but `{}` deletes from `{deleted_from}`",
                backup.id, delete.id
            ))),
            _ if !snapshot.verify => Some(Coverage::Unknown(format!(
                "`{}` is a snapshot taken with `verify: false`: nothing shows it holds what `{}` deletes",
                backup.id, delete.id
            ))),
            _ => None,
        },
        Action::RedisCopy(copy) => {
            if copy.source.value != deleted_from {
                return Some(Coverage::Wrong(format!(
                    "`{}` copies from `{}`, but `{}` deletes from `{deleted_from}`: the copy does not hold these keys",
                    backup.id, copy.source.value, delete.id
                )));
            }
            if let Some(only) = copy.key_type
                && params.key_type != Some(only)
            {
                return Some(Coverage::Wrong(format!(
                    "`{}` copies only keys of type `{only}`, but `{}` deletes keys of every type it matches",
                    backup.id, delete.id
                )));
            }
            let copied = copy
                .pattern
                .as_ref()
                .map_or(Some("*"), |t| t.as_literal())?;
            let deleted = params.pattern.as_literal()?;
            // Every key the delete's glob matches has the glob's own shape: the copy's
            // glob must match that shape.
            if !crate::backend::keyspace::glob_match(copied.as_bytes(), deleted.as_bytes()) {
                return Some(Coverage::Wrong(format!(
                    "`{}` copies `{copied}`, which does not take every key `{}` deletes (`{deleted}`)",
                    backup.id, delete.id
                )));
            }
            (copy.existing != crate::runbook::action::ExistingKeys::Replace).then(|| {
                Coverage::Unknown(format!(
                    "`{}` leaves keys that already existed on its target as they were (`existing: {}`): the copy may not hold the values `{}` deletes",
                    backup.id,
                    format!("{:?}", copy.existing).to_lowercase(),
                    delete.id
                ))
            })
        }
        other => Some(Coverage::Unknown(format!(
            "`{}` (`{}`) is not a snapshot or a copy: nothing shows that it backed up what `{}` deletes",
            backup.id,
            other.name(),
            delete.id
        ))),
    }
}
