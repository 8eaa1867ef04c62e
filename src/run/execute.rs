//! `run`, `resume` and `rollback`: set up the engine with the live runner, the operator,
//! the journal and a reporter; map the outcome to an exit code; write the reports.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::lease::{Lease, LeaseError, LeaseFence};
use super::notify::{Notifier, Sink};
use super::serve::{self, Journaled, LivePage};
use super::{Exit, load_one, overrides};
use crate::actions::ActionRunner;
use crate::actions::connections::Connections;
use crate::actions::live::LiveRunner;
use crate::actions::resolve::Secrets;
use crate::cli::{ExecArgs, LogFormat, ResumeArgs, RunArgs, RunRef};
use crate::exec::engine::{self, JournalHandle, RunOptions, RunOutcome, Shared};
use crate::exec::journal::{self, Journal, RunStatus};
use crate::exec::operator::RunOperator;
use crate::exec::state::{self, LockError, StateDir};
use crate::report::events::EventLog;
use crate::report::live::{self as live_report, LiveFormat};
use crate::report::{Report, html, junit, markdown};
use crate::runbook::diagnostic::HumanStyle;
use crate::runbook::{Runbook, VarOverride};

/// The exit code of a run's outcome.
pub fn exit_for(outcome: &RunOutcome) -> Exit {
    match outcome {
        RunOutcome::Succeeded => Exit::Done,
        RunOutcome::Failed { .. } | RunOutcome::Aborted { .. } => Exit::Failed,
        RunOutcome::StoppedAtGate { .. } | RunOutcome::NoGo { .. } => Exit::StoppedAtGate,
        RunOutcome::RolledBack { .. } => Exit::RolledBack,
        RunOutcome::RollbackFailed { .. } => Exit::RollbackFailed,
        RunOutcome::Interrupted => Exit::Interrupted,
    }
}

/// The async runtime of a command (exit 1 when it cannot start).
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Failed
        })
}

/// Secrets every run needs before it starts (a missing one would fail halfway through).
fn check_secrets(runbook: &Runbook, base_dir: &Path) -> Result<Secrets, Exit> {
    let secrets = Secrets::load(&runbook.secrets, base_dir);
    let missing = secrets.missing();
    if missing.is_empty() {
        return Ok(secrets);
    }
    for (name, reason) in missing {
        eprintln!("error: secret `{name}` is not available: {reason}");
    }
    eprintln!("nothing was done; provide the secrets and run again");
    Err(Exit::Usage)
}

fn base_dir(runbook: &Runbook) -> PathBuf {
    runbook
        .source
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn live_format(exec: &ExecArgs) -> LiveFormat {
    match exec.log_format {
        LogFormat::Json => LiveFormat::Json,
        LogFormat::Text
            if !exec.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) =>
        {
            LiveFormat::Progress
        }
        LogFormat::Text => LiveFormat::Plain,
    }
}

fn masked_overrides(list: &[VarOverride]) -> Vec<(String, String)> {
    list.iter()
        .map(|o| (o.name.clone(), crate::redact::mask_url_passwords(&o.value)))
        .collect()
}

/// `redis-move run`.
pub fn run(args: RunArgs, style: HumanStyle) -> Exit {
    let list = match overrides(&args.vars, style) {
        Ok(list) => list,
        Err(exit) => return exit,
    };
    let runbook = match load_one(&args.file, &list, style) {
        Ok(runbook) => runbook,
        Err(exit) => return exit,
    };
    if let Some(plan_file) = &args.plan {
        match reviewed_sha(plan_file) {
            Ok(sha) if sha == runbook.sha256 => {}
            Ok(sha) => {
                eprintln!(
                    "error: `{}` changed since the plan `{}` was reviewed (plan sha256 {}, runbook now {}); review a new plan",
                    args.file.display(),
                    plan_file.display(),
                    &sha[..sha.len().min(12)],
                    &runbook.sha256[..12]
                );
                return Exit::Usage;
            }
            Err(e) => {
                eprintln!("error: cannot read the plan `{}`: {e}", plan_file.display());
                return Exit::Usage;
            }
        }
    }
    let state = StateDir::for_runbook(&runbook, args.exec.state_dir.as_deref());
    let run_id = state.new_run_id();
    let mut journal = engine::new_journal(&runbook, &run_id);
    journal.overrides = masked_overrides(&list);
    execute(
        runbook,
        state,
        journal,
        &args.exec,
        RunOptions {
            concurrency: args.exec.concurrency,
            from_step: args.from.clone(),
            rerun_interrupted: false,
        },
        false,
    )
}

fn reviewed_sha(plan_file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(plan_file).map_err(|e| e.to_string())?;
    let plan: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    plan["runbook"]["sha256"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "it has no runbook sha256".to_owned())
}

/// Finds a run: in `--state-dir`, in the runbook's state directory, or in the
/// `.redis-move` directories under the current directory.
pub fn find_run(
    run: Option<&str>,
    runbook: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<(StateDir, String), String> {
    let dirs: Vec<StateDir> = match (state_dir, runbook) {
        (Some(dir), _) => vec![StateDir::at(dir)],
        (None, Some(file)) => {
            let name = crate::runbook::load(file, &[])
                .ok()
                .and_then(|l| l.runbook.map(|r| r.name))
                .ok_or_else(|| format!("cannot read the runbook `{}`", file.display()))?;
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            vec![StateDir::at(dir.join(".redis-move").join(name))]
        }
        (None, None) => discover(),
    };
    let run = run.filter(|r| *r != "latest");
    let mut candidates: Vec<(String, StateDir)> = dirs
        .iter()
        .flat_map(|d| d.runs().into_iter().map(move |id| (id, d.clone())))
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    let found = match run {
        Some(id) => candidates
            .into_iter()
            .find(|(candidate, _)| candidate == id),
        None => candidates.pop(),
    };
    found.map(|(id, dir)| (dir, id)).ok_or_else(|| match run {
        Some(id) => format!("no run `{id}` found (give --runbook FILE or --state-dir DIR)"),
        None => "no run found (give --runbook FILE or --state-dir DIR)".to_owned(),
    })
}

fn discover() -> Vec<StateDir> {
    let mut dirs = Vec::new();
    for base in [PathBuf::from("."), PathBuf::from("runbooks")] {
        let Ok(entries) = std::fs::read_dir(base.join(".redis-move")) else {
            continue;
        };
        dirs.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| StateDir::at(e.path())),
        );
    }
    dirs
}

/// `redis-move resume` and `redis-move rollback`.
pub fn resume(args: ResumeArgs, style: HumanStyle, rollback_only: bool) -> Exit {
    let target: &RunRef = &args.target;
    let (state, run_id) = match find_run(
        target.run.as_deref(),
        target.runbook.as_deref(),
        target.exec.state_dir.as_deref(),
    ) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage;
        }
    };
    let mut journal = match journal::read(&state.journal(&run_id)) {
        Ok(journal) => journal,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    if !rollback_only {
        match journal.status {
            RunStatus::Succeeded => {
                eprintln!("run {run_id} already succeeded; nothing to resume");
                return Exit::Done;
            }
            RunStatus::RolledBack => {
                eprintln!("run {run_id} was rolled back; start a new run with `redis-move run`");
                return Exit::Usage;
            }
            _ => {}
        }
    }
    // The same vars as the original run: its overrides, then any given now.
    let mut list = VarOverride::from_pairs(&journal.overrides);
    let given = match overrides(&args.vars, style) {
        Ok(extra) => extra,
        Err(exit) => return exit,
    };
    // A value the journal masked (a password written literally) must be given again,
    // with `--var` or in a `--vars-file`, as `run` took it.
    let masked: Vec<&str> = journal
        .overrides
        .iter()
        .filter(|(_, v)| v.contains(crate::redact::MASK))
        .map(|(n, _)| n.as_str())
        .collect();
    if let Some(name) = masked.iter().find(|n| !given.iter().any(|o| o.name == **n)) {
        eprintln!(
            "error: the run's var `{name}` held a password the journal does not keep; give it again with `--var {name}=...` or the same `--vars-file`"
        );
        return Exit::Usage;
    }
    list.extend(given);
    let file = target.runbook.clone().unwrap_or_else(|| {
        PathBuf::from(if journal.source.is_empty() {
            &journal.path
        } else {
            &journal.source
        })
    });
    let runbook = match load_one(&file, &list, style) {
        Ok(runbook) => runbook,
        Err(exit) => return exit,
    };
    if runbook.sha256 != journal.sha256 {
        let changed = engine::changed_done_steps(&journal, &runbook);
        if !changed.is_empty() && !args.force {
            eprintln!(
                "error: the runbook changed in steps this run already did: {}\n  resuming would mix two versions; check the change, then `resume --force`",
                changed.join(", ")
            );
            return Exit::Usage;
        }
        eprintln!("note: the runbook changed since the run started, but not in steps already done");
        journal.sha256 = runbook.sha256.clone();
    }
    if rollback_only {
        journal.status = RunStatus::RollingBack;
        // Asked by hand: everything the run did, whatever the phase's scope.
        journal.rollback_phase = None;
        if journal.reason.is_empty() || !journal.reason.starts_with("rolled back by hand") {
            journal.reason = format!("rolled back by hand by {}", journal::operator());
        }
    }
    execute(
        runbook,
        state,
        journal,
        &target.exec,
        RunOptions {
            concurrency: target.exec.concurrency,
            from_step: None,
            rerun_interrupted: args.rerun_interrupted,
        },
        true,
    )
}

/// `--from` must name a step of the runbook's phases and each `--approve` a gate or a
/// manual step (or a phase's rollback-targets question): a typo would otherwise run
/// every step from the first, or stop at the gate it meant to approve.
fn check_names(runbook: &Runbook, from: Option<&str>, approve: &[String]) -> Result<(), Exit> {
    let steps: Vec<&crate::runbook::model::Step> =
        runbook.phases.iter().flat_map(|p| p.steps.iter()).collect();
    let unknown = |flag: &str, given: &str, what: &str, known: &[String]| {
        let hint = crate::runbook::de::did_you_mean(given, known.iter().map(String::as_str))
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        eprintln!(
            "error: `{flag} {given}` names no {what} of `{}`{hint}",
            runbook.name
        );
        Err(Exit::Usage)
    };
    if let Some(from) = from {
        let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        if !ids.iter().any(|id| id == from) {
            return unknown("--from", from, "step", &ids);
        }
    }
    let decisions: Vec<String> = steps
        .iter()
        .filter(|s| {
            matches!(
                s.action,
                crate::runbook::action::Action::Gate(_) | crate::runbook::action::Action::Manual(_)
            )
        })
        .map(|s| s.id.clone())
        .chain(
            runbook
                .phases
                .iter()
                .map(|p| format!("{}.rollback-targets", p.id)),
        )
        .chain(
            runbook
                .rollback
                .iter()
                .filter(|s| matches!(s.action, crate::runbook::action::Action::Manual(_)))
                .map(|s| s.id.clone()),
        )
        .collect();
    for gate in approve {
        if !decisions.iter().any(|d| d == gate) {
            return unknown("--approve", gate, "gate or manual step", &decisions);
        }
    }
    Ok(())
}

fn execute(
    runbook: Runbook,
    state: StateDir,
    journal: Journal,
    exec: &ExecArgs,
    options: RunOptions,
    resumed: bool,
) -> Exit {
    if let Err(exit) = check_names(&runbook, options.from_step.as_deref(), &exec.approve) {
        return exit;
    }
    let page = &exec.page;
    if exec.serve.is_none()
        && (page.page_tls_cert.is_some() || page.page_insecure || page.page_token_file.is_some())
    {
        eprintln!("error: the --page-* options need --serve ADDR (the live page's address)");
        return Exit::Usage;
    }
    let run_id = journal.run_id.clone();
    let base = base_dir(&runbook);
    let secrets = match check_secrets(&runbook, &base) {
        Ok(secrets) => secrets,
        Err(exit) => return exit,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    crate::backend::install_crypto_provider();
    let runbook = Arc::new(runbook);
    let runner: Arc<dyn ActionRunner> = Arc::new(LiveRunner::new(Connections::new(&runbook)));
    let lock = match state::acquire(&state.lock_path(), &run_id) {
        Ok(lock) => lock,
        Err(LockError::Held(holder)) => {
            eprintln!(
                "error: another run of `{}` is in progress: {holder}\n  wait for it, or if that process is gone: `redis-move lock status --runbook {}`",
                runbook.name,
                runbook.source.name()
            );
            return Exit::Usage;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    if let Some(stale) = &lock.stale {
        eprintln!("note: took over a lock left by a run that is gone ({stale})");
    }
    let redactor = secrets.redactor_for(&runbook);
    // The lock shared across machines, when the runbook names one.
    let lease = match &runbook.lock {
        None => None,
        Some(lock) => match runtime.block_on(take_lease(&runbook, lock, &secrets, &run_id)) {
            Ok(lease) => Some(lease),
            Err(e @ (LeaseError::Backend(_) | LeaseError::Connect(_))) => {
                eprintln!(
                    "error: {}\n  nothing was done: a run takes its lock before anything else",
                    redactor.redact(&e.to_string())
                );
                return Exit::Usage;
            }
            Err(e) => {
                eprintln!(
                    "error: {}\n  nothing was done; a holder that is gone leaves the lease to expire within {} (`redis-move lock status --runbook {}`)",
                    redactor.redact(&e.to_string()),
                    crate::runbook::units::format_duration(lock.ttl),
                    runbook.source.name()
                );
                return Exit::Usage;
            }
        },
    };
    let operator = Arc::new(RunOperator {
        approved: exec.approve.iter().cloned().collect::<HashSet<_>>(),
        yes: exec.yes,
        approvals_dir: state.approvals(&run_id),
        interactive: !exec.no_input && RunOperator::terminal(),
        // The live page decides gates: wait for it.
        wait: exec.wait_at_gates || exec.serve.is_some(),
    });
    let handle = Arc::new(JournalHandle::with_redactor(
        state.journal(&run_id),
        journal,
        redactor.clone(),
    ));
    let sinks = match notify_sinks(&runbook, &secrets) {
        Ok(sinks) => sinks,
        Err(e) => {
            eprintln!("error: {}", redactor.redact(&e));
            return Exit::Usage;
        }
    };
    let redactor = Arc::new(redactor);
    let cancel = CancellationToken::new();
    let (events, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let format = live_format(exec);
    let mut event_log = EventLog::new(
        state.run_dir(&run_id).join("events.jsonl"),
        (*redactor).clone(),
    );
    let outcome = runtime.block_on(async {
        let page = match &exec.serve {
            None => None,
            Some(addr) => match serve::start(
                &exec.page.options(addr),
                Journaled::Live(handle.clone()),
                runbook.clone(),
                &state,
                &run_id,
            )
            .await
            {
                Ok(page) => {
                    announce_page(&page);
                    Some(page)
                }
                Err(e) => {
                    if let Some(lease) = &lease {
                        lease.release().await;
                    }
                    eprintln!("error: {e}\n  nothing was done");
                    return Err(Exit::Usage);
                }
            },
        };
        let poke = page.as_ref().map(LivePage::poker);
        // Every event goes to the terminal, the event log (and the page), and to the
        // webhooks that want it.
        let (to_reporter, reporter_events) = tokio::sync::mpsc::unbounded_channel();
        let reporter = live_report::spawn(format, reporter_events);
        let notifier = (!sinks.is_empty()).then(|| {
            Notifier::start(
                sinks,
                &runbook.name,
                &run_id,
                handle.clone(),
                redactor.clone(),
            )
        });
        let tee = tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                if let Some(notifier) = &notifier {
                    notifier.observe(&event);
                }
                event_log.append(&event);
                if let Some(poke) = &poke {
                    poke.notify_one();
                }
                let _ = to_reporter.send(event);
            }
            notifier
        });
        let interrupt = tokio::spawn(watch_interrupts(cancel.clone()));
        let renewals = CancellationToken::new();
        if let Some(lease) = &lease {
            tokio::spawn(lease.clone().keep(renewals.clone()));
        }
        let shared = Shared::new(
            runbook.clone(),
            runner,
            operator,
            handle.clone(),
            events,
            cancel,
            Arc::new(secrets),
            redactor.clone(),
        );
        let shared = Arc::new(match &lease {
            Some(lease) => shared.with_fence(Arc::new(LeaseFence(lease.clone()))),
            None => shared,
        });
        let outcome = engine::run(shared, options).await;
        renewals.cancel();
        if let Some(lease) = &lease {
            lease.release().await;
        }
        interrupt.abort();
        if let Ok(Some(notifier)) = tee.await {
            notifier.finish().await;
            let _ = handle.persist();
        }
        let _ = reporter.await;
        if let Some(page) = page {
            page.finish().await;
        }
        Ok(outcome)
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(exit) => return exit,
    };
    // A terminal prompt still waiting for input (the gate was approved from another
    // shell) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    drop(lock);
    let final_journal = handle.read(|j| j.clone());
    let report = Report::build(&final_journal, &runbook);
    let dir = state.run_dir(&run_id);
    match write_reports(&dir, &report, exec.junit.as_deref()) {
        Ok(path) => eprintln!("report: {}", path.display()),
        Err(e) => eprintln!("warning: the report could not be written: {e}"),
    }
    let exit = exit_for(&outcome);
    match &outcome {
        RunOutcome::StoppedAtGate { gate } => eprintln!(
            "stopped at `{gate}`, state saved. Continue with: redis-move resume {run_id} --approve {gate}   (or from another shell while waiting: redis-move approve {run_id} {gate})"
        ),
        RunOutcome::Failed { .. } | RunOutcome::Interrupted => {
            eprintln!("resumable: redis-move resume {run_id}")
        }
        RunOutcome::RollbackFailed { .. } => {
            eprintln!("MANUAL ACTION NEEDED: the rollback did not undo everything; see the report")
        }
        _ => {}
    }
    let _ = resumed;
    exit
}

/// Tells the operator where the live page is and how approvals on it are made.
pub(super) fn announce_page(page: &LivePage) {
    eprintln!("live page: {}", page.url);
    if page.plain_to_network {
        eprintln!(
            "  warning: plain HTTP on a network address (--page-insecure): whoever is on the path reads the page and the token; any site a viewer's browser opens can read the run's state"
        );
    }
    if page.token_given {
        eprintln!(
            "  deciding a gate there needs the token in {}",
            page.token_file.display()
        );
    } else {
        eprintln!(
            "  deciding a gate there needs this token: {}  (also in {})",
            page.token,
            page.token_file.display()
        );
    }
}

/// The runbook's webhooks (`notify:`), their URLs resolved.
fn notify_sinks(runbook: &Runbook, secrets: &Secrets) -> Result<Vec<Sink>, String> {
    let values = std::collections::HashMap::new();
    let resolver = crate::actions::resolve::Resolver {
        secrets,
        steps: &values,
    };
    runbook
        .notify
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let url = resolver
                .resolve(&n.webhook)
                .map_err(|e| format!("`notify` webhook #{}: {e}", i + 1))?;
            if let Some(problem) = crate::runbook::validate::webhook_problem(&url) {
                return Err(format!(
                    "`notify` webhook #{}: {problem}; nothing was done",
                    i + 1
                ));
            }
            Ok(Sink {
                url,
                format: n.format,
                events: n.events.clone(),
                timeout: n.timeout,
            })
        })
        .collect()
}

/// Takes the run's lease in the Redis its `lock:` names.
async fn take_lease(
    runbook: &Runbook,
    lock: &crate::runbook::model::LeaseLock,
    secrets: &Secrets,
    run_id: &str,
) -> Result<Arc<Lease>, LeaseError> {
    let redis = lock_redis(runbook, &lock.target, secrets).await?;
    Lease::acquire(redis, &lock.key, lock.ttl, &journal::operator(), run_id).await
}

/// A connection to the Redis target `target` of `runbook` (its secrets resolved).
pub(super) async fn lock_redis(
    runbook: &Runbook,
    target: &str,
    secrets: &Secrets,
) -> Result<crate::backend::redis::RedisBackend, LeaseError> {
    let connections = Connections::new(runbook);
    let values = std::collections::HashMap::new();
    let resolver = crate::actions::resolve::Resolver {
        secrets,
        steps: &values,
    };
    connections
        .redis(target, &resolver)
        .await
        .map_err(|e| LeaseError::Connect(e.to_string()))
}

/// First SIGINT: stop after the current step (journal saved, resumable). Second: exit at
/// once (the journal says where the run was).
async fn watch_interrupts(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("\ninterrupt: stopping after the current step (Ctrl-C again to exit at once)");
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("interrupt: exiting now; `redis-move resume` continues from the journal");
        std::process::exit(Exit::Interrupted as i32);
    }
}

/// Writes report.md and report.json into the run's directory (and JUnit where asked).
pub fn write_reports(
    dir: &Path,
    report: &Report,
    junit_file: Option<&Path>,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let md = dir.join("report.md");
    let sink = crate::redact::at_sink;
    std::fs::write(&md, sink(&markdown::render(report)))?;
    std::fs::write(dir.join("report.html"), sink(&html::render(report)))?;
    std::fs::write(
        dir.join("report.json"),
        crate::redact::at_sink_json(&serde_json::to_string_pretty(report).unwrap_or_default()),
    )?;
    if let Some(path) = junit_file {
        std::fs::write(path, sink(&junit::render(report)))?;
    }
    Ok(md)
}
