//! Local commands: argv without a shell, or a script run by `sh -c` whose text is
//! never interpolated (values arrive as environment variables).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::BackendError;
use super::docker::change::CommandOutput;

/// Runs `argv` (or `shell -c script`) in `cwd` with `env` added, killed at `timeout`.
pub async fn run(
    argv: &[String],
    script: Option<(&str, &str)>,
    env: &[(String, String)],
    cwd: &Path,
    timeout: Duration,
) -> Result<CommandOutput, BackendError> {
    let mut command = match script {
        Some((shell, text)) => {
            let mut c = tokio::process::Command::new(shell);
            c.arg("-c").arg(text);
            c
        }
        None => {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| BackendError::Config("empty command".into()))?;
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    };
    command
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        let what = script
            .map(|(shell, _)| shell.to_owned())
            .or_else(|| argv.first().cloned())
            .unwrap_or_default();
        BackendError::Command(format!("cannot start `{what}`: {e}"))
    })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(err) = stderr.as_mut() {
            let _ = err.read_to_end(&mut buf).await;
        }
        buf
    };
    let work = async { tokio::join!(child.wait(), read_out, read_err) };
    match tokio::time::timeout(timeout, work).await {
        Ok((status, out, err)) => {
            let status = status.map_err(|e| BackendError::Command(e.to_string()))?;
            let mut stderr = String::from_utf8_lossy(&err).into_owned();
            // Killed, it has no exit code (-1 then): say by what.
            if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
                stderr.push_str(&format!("(killed by signal {signal})\n"));
            }
            Ok(CommandOutput {
                exit_code: status.code().map(i64::from).unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr,
            })
        }
        Err(_) => Err(BackendError::Timeout(format!(
            "the command did not finish within {}",
            crate::runbook::units::format_duration(timeout)
        ))),
    }
}
