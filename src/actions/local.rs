//! Actions that need no target: `wait`, `shell`, `http`, `tcp` and `assert`.

use std::time::Duration;

use super::act::{Act, command_value};
use super::probe::ProbeContext;
use super::runner::{ActionError, DEFAULT_STEP_TIMEOUT};
use crate::backend::net::{self, HttpRequest};
use crate::backend::shell;
use crate::exec::event::Measure;
use crate::runbook::action::{Action, HttpParams, WaitParams};
use crate::runbook::units::format_duration;
use crate::value::Value;

/// Waits for the step's duration, counting down.
pub async fn wait(act: &Act<'_>, params: &WaitParams) -> Result<Value, ActionError> {
    let total = params.duration.0;
    let end = tokio::time::Instant::now() + total;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(Value::Null);
        }
        act.progress_of(
            format!("waiting {}", format_duration(total)),
            Some(left),
            Measure::time(total, left),
        );
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

/// Runs a local command or script (in the runbook's directory unless `cwd` says
/// otherwise).
pub async fn shell(act: &Act<'_>) -> Result<Value, ActionError> {
    let Action::Shell(p) = &act.step.action else {
        return Err(ActionError::config("not a shell step"));
    };
    let r = act.resolver();
    let env = r.resolve_map(&p.env)?;
    let base_dir = act.connections.base_dir();
    let cwd = match r.resolve_opt(p.cwd.as_ref())? {
        Some(dir) => base_dir.join(dir),
        None => base_dir.to_path_buf(),
    };
    let cwd = if cwd.as_os_str().is_empty() {
        std::path::PathBuf::from(".")
    } else {
        cwd
    };
    let limit = act.step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT);
    let shell_name = p.shell.clone().unwrap_or_else(|| "sh".into());
    let script = p.script.as_deref().map(|s| (shell_name.as_str(), s));
    let output = shell::run(&r.resolve_all(&p.argv)?, script, &env, &cwd, limit).await?;
    Ok(command_value(output, act.ctx.redactor))
}

/// An HTTP request (`http` steps that change something, like a POST).
pub async fn http(act: &Act<'_>, p: &HttpParams) -> Result<Value, ActionError> {
    let limit = act.step.timeout.unwrap_or(Duration::from_secs(30));
    http_request(p, limit, &act.probe_context()).await
}

async fn http_request(
    p: &HttpParams,
    limit: Duration,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    let r = &ctx.resolver;
    let ca = match p.tls.as_ref().and_then(|t| t.ca.as_ref()) {
        Some(path) => Some(
            std::fs::read(ctx.connections.base_dir().join(path))
                .map_err(|e| ActionError::config(format!("cannot read CA `{path}`: {e}")))?,
        ),
        None => None,
    };
    let request = HttpRequest {
        method: format!("{:?}", p.method).to_uppercase(),
        url: r.resolve(&p.url)?,
        headers: r.resolve_map(&p.headers)?,
        body: r.resolve_opt(p.body.as_ref())?,
        status: p.status,
        ca,
        insecure: p.tls.as_ref().is_some_and(|t| t.insecure),
        timeout: limit,
    };
    Ok(net::http(&request).await?)
}

/// Runs a read-only local action: `tcp`, `http` (GET and the like), `assert`.
pub async fn probe(
    action: &Action,
    limit: Duration,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    let r = &ctx.resolver;
    match action {
        Action::Tcp(p) => Ok(Value::Duration(
            net::tcp_connect(&r.resolve(&p.address)?, limit).await?,
        )),
        Action::Http(p) => http_request(p, limit, ctx).await,
        Action::Assert(p) => Ok(Value::Text(r.resolve(&p.value)?)),
        other => Err(ActionError::config(format!(
            "`{}` is not a read-only local action",
            other.name()
        ))),
    }
}
