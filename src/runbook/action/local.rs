//! Parameters of the actions that need no Docker or Redis target: `shell`, `http`,
//! `tcp`, `assert`, `wait`, `manual`, `gate`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::docker::{COMMAND_RESULT, shell_words};
use super::{ActionParams, Effect, Inverse, Shape};
use crate::runbook::template::Template;
use crate::runbook::units::RunbookDuration;

/// `shell`: run a local command (`argv`) or script (`script`, run by `sh -c`).
///
/// A script's text is never interpolated: pass values through `env:`, where
/// `${vars.x}` and `${secrets.x}` are allowed, and read them as `"$NAME"`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ShellParams {
    /// The program and its arguments, run without a shell.
    #[serde(default)]
    pub argv: Vec<Template>,
    /// A script for `sh -c` (or `shell`).
    #[serde(default)]
    pub script: Option<String>,
    /// The interpreter for `script` (default `sh`).
    #[serde(default)]
    pub shell: Option<String>,
    /// Environment variables for the command.
    #[serde(default)]
    pub env: IndexMap<String, Template>,
    /// Working directory (default: the runbook's directory).
    #[serde(default)]
    pub cwd: Option<Template>,
    /// Declares that the command changes nothing (it then needs no rollback).
    #[serde(default)]
    pub read_only: bool,
}

impl ActionParams for ShellParams {
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
        let mut out = match &self.script {
            Some(script) => {
                let first = script
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                let lines = script.lines().filter(|l| !l.trim().is_empty()).count();
                let shell = self.shell.as_deref().unwrap_or("sh");
                if lines > 1 {
                    format!("{shell} script ({lines} lines): {first} ...")
                } else {
                    format!("{shell} -c '{first}'")
                }
            }
            None => format!("run {}", shell_words(&self.argv)),
        };
        if !self.env.is_empty() {
            let names: Vec<_> = self.env.keys().map(String::as_str).collect();
            out.push_str(&format!(" (env {})", names.join(", ")));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        match (&self.script, self.argv.is_empty()) {
            (Some(_), false) => vec![("argv", "give `argv` or `script`, not both".into())],
            (None, true) => vec![(
                "argv",
                "`shell` needs `argv` (a command) or `script`".into(),
            )],
            _ => Vec::new(),
        }
    }
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET (default).
    #[default]
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

/// TLS settings of an HTTP request.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HttpTls {
    /// A CA certificate file (PEM) to trust.
    #[serde(default)]
    pub ca: Option<String>,
    /// Accept any certificate (test setups only).
    #[serde(default)]
    pub insecure: bool,
}

/// `http`: a request; the value has `status`, `body`, `json` (the parsed body), `latency`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HttpParams {
    /// The URL.
    pub url: Template,
    /// The method (default GET).
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers (values with secrets are shown as `****`).
    #[serde(default)]
    pub headers: IndexMap<String, Template>,
    /// The request body.
    #[serde(default)]
    pub body: Option<Template>,
    /// The status the response must have (default: any 2xx).
    #[serde(default)]
    pub status: Option<u16>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<HttpTls>,
    /// Declares whether the request changes anything (default: GET and HEAD do not).
    #[serde(default)]
    pub read_only: Option<bool>,
}

impl ActionParams for HttpParams {
    fn effect(&self) -> Effect {
        let read_only = self
            .read_only
            .unwrap_or(matches!(self.method, HttpMethod::Get | HttpMethod::Head));
        if read_only {
            Effect::ReadOnly
        } else {
            Effect::Mutating
        }
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("status", Shape::Number),
            ("body", Shape::Text),
            ("json", Shape::Any),
            ("latency", Shape::Duration),
            ("headers", Shape::Any),
        ])
    }
    fn describe(&self) -> String {
        let method = format!("{:?}", self.method).to_uppercase();
        let mut out = format!("{method} {}", self.url.display());
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let sensitive = v.has_secret()
                    || ["authorization", "cookie", "x-api-key"]
                        .contains(&k.to_ascii_lowercase().as_str());
                format!(
                    "{k}: {}",
                    if sensitive {
                        "****".into()
                    } else {
                        v.display()
                    }
                )
            })
            .collect();
        if !headers.is_empty() {
            out.push_str(&format!(" [{}]", headers.join(", ")));
        }
        match self.status {
            Some(status) => out.push_str(&format!(", expect status {status}")),
            None => out.push_str(", expect a 2xx status"),
        }
        out
    }
}

/// `tcp`: connect to `host:port`; the value is the connect latency.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TcpParams {
    /// `host:port`.
    pub address: Template,
}

impl ActionParams for TcpParams {
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Duration
    }
    fn describe(&self) -> String {
        format!("connect to {}", self.address.display())
    }
}

/// `assert`: check a value without any I/O (`value: ${env.UPSTASH_REDIS_URL}` with
/// `expect: { starts_with: "https://" }`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AssertParams {
    /// The value to check.
    pub value: Template,
}

impl ActionParams for AssertParams {
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Text
    }
    fn describe(&self) -> String {
        format!("`{}`", self.value.display())
    }
}

/// `wait`: wait for a duration, with a countdown.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WaitParams {
    /// How long.
    pub duration: RunbookDuration,
}

impl ActionParams for WaitParams {
    fn effect(&self) -> Effect {
        Effect::Wait
    }
    fn shape(&self) -> Shape {
        Shape::Nothing
    }
    fn describe(&self) -> String {
        self.duration.to_string()
    }
}

/// `manual`: an instruction the operator carries out and confirms ("In the Coolify
/// dashboard set REDIS_URL and redeploy").
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ManualParams {
    /// What to do.
    pub instruction: Template,
    /// Who must confirm it (a role such as `admin`), recorded in the report.
    #[serde(default)]
    pub by: Option<String>,
}

impl ActionParams for ManualParams {
    fn effect(&self) -> Effect {
        Effect::Operator
    }
    fn shape(&self) -> Shape {
        Shape::Nothing
    }
    fn describe(&self) -> String {
        let by = self
            .by
            .as_ref()
            .map(|b| format!(" (confirmed by {b})"))
            .unwrap_or_default();
        format!("{}{by}", self.instruction.display())
    }
}

/// What happens when a gate is not decided in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateFallback {
    /// Stop the run (resumable) — the default.
    #[default]
    Abort,
    /// Roll back what was done.
    Rollback,
}

/// `gate`: a go/no-go decision.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GateParams {
    /// The question put to the operator.
    pub question: Template,
    /// Named sign-offs required (`[admin, developer]`); each is recorded.
    #[serde(default)]
    pub signoffs: Vec<String>,
    /// How long to wait for a decision.
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
    /// What a timeout means (default `abort`).
    #[serde(default)]
    pub on_timeout: GateFallback,
    /// What no-go means (default `abort`).
    #[serde(default)]
    pub on_no_go: GateFallback,
}

impl ActionParams for GateParams {
    fn effect(&self) -> Effect {
        Effect::Operator
    }
    fn inverse(&self) -> Inverse {
        // A decision changes nothing.
        Inverse::NotNeeded
    }
    fn shape(&self) -> Shape {
        Shape::Nothing
    }
    fn describe(&self) -> String {
        let mut out = self.question.display();
        if !self.signoffs.is_empty() {
            out.push_str(&format!(" (sign-off: {})", self.signoffs.join(", ")));
        }
        if let Some(timeout) = self.timeout {
            out.push_str(&format!(
                "; after {timeout} without a decision: {}",
                format!("{:?}", self.on_timeout).to_lowercase()
            ));
        }
        if self.on_no_go == GateFallback::Rollback {
            out.push_str("; no-go rolls back");
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        if self.question.display().trim().is_empty() {
            vec![("question", "a gate needs a question".into())]
        } else {
            Vec::new()
        }
    }
}
