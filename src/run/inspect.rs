//! `status`, `report`, `approve` and `lock`: looking at runs and their locks.

use std::io::Write as _;

use super::execute::{find_run, write_reports};
use super::{Exit, load_one};
use crate::cli::{
    ApproveArgs, LockAction, LockArgs, PlanFormat, ReportArgs, ServeArgs, StatusArgs,
};
use crate::exec::journal::{self, GateDecision, StepStatus};
use crate::exec::operator::write_approval;
use crate::exec::state::{self, LockState, StateDir};
use crate::report::Report;
use crate::report::markdown::status_text;
use crate::runbook::diagnostic::HumanStyle;

fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded | StepStatus::Recovered => "✓",
        StepStatus::Skipped => "-",
        StepStatus::Failed | StepStatus::CompensationFailed => "✗",
        StepStatus::Pending => " ",
        StepStatus::Running => "…",
        StepStatus::Compensated => "↩",
    }
}

/// Finds a run and reads its journal; errors are printed.
fn load_run(
    run: Option<&str>,
    runbook: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
) -> Result<(StateDir, String, journal::Journal), Exit> {
    let (dir, run_id) = find_run(run, runbook, state_dir).map_err(|message| {
        eprintln!("error: {message}");
        Exit::Usage
    })?;
    let journal = journal::read(&dir.journal(&run_id)).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Usage
    })?;
    Ok((dir, run_id, journal))
}

/// A run's state directory, id, journal, and runbook (`runbook`, else the one its
/// journal names, with the run's var overrides): for its report and its page, which
/// read them and never act.
fn load_run_and_runbook(
    run: Option<&str>,
    runbook: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
    style: HumanStyle,
) -> Result<(StateDir, String, journal::Journal, crate::runbook::Runbook), Exit> {
    let (dir, run_id, journal) = load_run(run, runbook, state_dir)?;
    let runbook = runbook_of(&journal, runbook, style)?;
    Ok((dir, run_id, journal, runbook))
}

fn runbook_of(
    journal: &journal::Journal,
    file: Option<&std::path::Path>,
    style: HumanStyle,
) -> Result<crate::runbook::Runbook, Exit> {
    let file = file.map(std::path::Path::to_path_buf).unwrap_or_else(|| {
        std::path::PathBuf::from(if journal.source.is_empty() {
            &journal.path
        } else {
            &journal.source
        })
    });
    let overrides = crate::runbook::VarOverride::from_pairs(&journal.overrides);
    load_one(&file, &overrides, style)
}

/// `redis-move serve`: the live page of a run another process runs (or that ended).
pub fn serve(args: ServeArgs, style: HumanStyle) -> Exit {
    let (dir, run_id, _, runbook) = match load_run_and_runbook(
        args.run.as_deref(),
        args.runbook.as_deref(),
        args.state_dir.as_deref(),
        style,
    ) {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    let runtime = match super::execute::runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let options = args.page.options(&args.addr);
    let journal_path = dir.journal(&run_id);
    runtime.block_on(async {
        match crate::run::serve::start(
            &options,
            crate::run::serve::Journaled::File(journal_path),
            std::sync::Arc::new(runbook),
            &dir,
            &run_id,
        )
        .await
        {
            Ok(page) => {
                super::execute::announce_page(&page);
                eprintln!("serving run {run_id} until Ctrl-C");
                page.until_interrupted().await;
                Exit::Done
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Usage
            }
        }
    })
}

/// `redis-move status`.
pub fn status(args: StatusArgs) -> Exit {
    let (dir, run_id, journal) = match load_run(
        args.run.as_deref(),
        args.runbook.as_deref(),
        args.state_dir.as_deref(),
    ) {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    if args.format == PlanFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&journal).unwrap_or_default()
        );
        return Exit::Done;
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "run {} of {} ({})",
        journal.run_id, journal.runbook, journal.path
    );
    let _ = writeln!(
        out,
        "status: {}{}",
        status_text(journal.status),
        if journal.reason.is_empty() {
            String::new()
        } else {
            format!(" — {}", journal.reason)
        }
    );
    let _ = writeln!(
        out,
        "started {} by {}; last written {}",
        journal.started_at, journal.operator, journal.updated_at
    );
    let mut phase = String::new();
    let mut steps: Vec<(&String, &journal::StepRecord)> = journal.steps.iter().collect();
    steps.sort_by_key(|(_, r)| (r.started_at.is_none(), r.started_at));
    for (id, record) in steps {
        if record.phase != phase {
            phase = record.phase.clone();
            let _ = writeln!(out, "phase {phase}");
        }
        let detail = if record.detail.is_empty() {
            String::new()
        } else {
            format!(" — {}", record.detail)
        };
        let _ = writeln!(
            out,
            "  {} {id} {:?}{detail}",
            mark(record.status),
            record.status
        );
    }
    for gate in &journal.gates {
        let decision = if gate.decision == GateDecision::Go {
            "GO"
        } else {
            "NO-GO"
        };
        let _ = writeln!(
            out,
            "gate {}: {decision} by {} ({}) at {}",
            gate.gate, gate.who, gate.how, gate.at
        );
    }
    for action in &journal.rollback {
        let _ = writeln!(
            out,
            "rollback {}: {} — {}",
            action.step, action.operation, action.status
        );
    }
    let _ = writeln!(out, "journal: {}", dir.journal(&run_id).display());
    let _ = std::io::stdout().write_all(out.as_bytes());
    Exit::Done
}

/// `redis-move report`.
pub fn report(args: ReportArgs, style: HumanStyle) -> Exit {
    let (dir, run_id, journal, runbook) = match load_run_and_runbook(
        args.run.as_deref(),
        args.runbook.as_deref(),
        args.state_dir.as_deref(),
        style,
    ) {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    match write_reports(
        &dir.run_dir(&run_id),
        &Report::build(&journal, &runbook),
        args.junit.as_deref(),
    ) {
        Ok(path) => {
            println!("{}", path.display());
            Exit::Done
        }
        Err(e) => {
            eprintln!("error: cannot write the report: {e}");
            Exit::Failed
        }
    }
}

/// `redis-move approve`.
pub fn approve(args: ApproveArgs) -> Exit {
    let run = (args.run != "latest").then_some(args.run.as_str());
    let (dir, run_id) = match find_run(run, args.runbook.as_deref(), args.state_dir.as_deref()) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage;
        }
    };
    let known = journal::read(&dir.journal(&run_id))
        .map(|j| j.steps.contains_key(&args.gate))
        .unwrap_or(false);
    if !known {
        eprintln!("error: run {run_id} has no gate or step `{}`", args.gate);
        return Exit::Usage;
    }
    let decision = if args.no_go {
        GateDecision::NoGo
    } else {
        GateDecision::Go
    };
    match write_approval(
        &dir.approvals(&run_id),
        &args.gate,
        &crate::exec::operator::ApprovalFile::by_command(decision),
    ) {
        Ok(_) => {
            println!(
                "{} `{}` of run {run_id}: a run waiting there goes on; a stopped run goes on with `redis-move resume {run_id}`",
                if args.no_go { "refused" } else { "approved" },
                args.gate
            );
            Exit::Done
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let pending =
                crate::exec::operator::pending_approval(&dir.approvals(&run_id), &args.gate);
            eprintln!(
                "error: `{}` was decided already ({}), and the run has not taken that decision yet; it stands",
                args.gate,
                pending
                    .map(|p| format!("{:?} by {}", p.decision, p.who))
                    .unwrap_or_else(|| "by someone else".into())
            );
            Exit::Usage
        }
        Err(e) => {
            eprintln!("error: cannot write the approval: {e}");
            Exit::Failed
        }
    }
}

/// `redis-move lock`: the lock file of the state directory and, when the runbook names
/// one, its lease in Redis.
pub fn lock(args: LockArgs, style: HumanStyle) -> Exit {
    let runbook = match &args.runbook {
        Some(file) => match super::overrides(&args.vars, style)
            .and_then(|list| load_one(file, &list, style))
        {
            Ok(runbook) => Some(runbook),
            Err(exit) => return exit,
        },
        None => None,
    };
    let dir = match (&args.state_dir, &runbook) {
        (Some(dir), _) => StateDir::at(dir),
        (None, Some(runbook)) => StateDir::for_runbook(runbook, None),
        (None, None) => return Exit::Usage,
    };
    let file_exit = lock_file(&args, &dir);
    match runbook.as_ref().filter(|r| r.lock.is_some()) {
        Some(runbook) => match lease_lock(runbook, args.action, args.force) {
            Exit::Done => file_exit,
            other => other,
        },
        None => file_exit,
    }
}

/// `lock` on the runbook's lease in Redis.
fn lease_lock(runbook: &crate::runbook::Runbook, action: LockAction, force: bool) -> Exit {
    use super::lease::{LeaseState, break_lease, status};
    let Some(lock) = &runbook.lock else {
        return Exit::Done;
    };
    let base = runbook
        .source
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let secrets = crate::actions::resolve::Secrets::load(&runbook.secrets, &base);
    let redactor = secrets.redactor_for(runbook);
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        eprintln!("error: cannot start the async runtime");
        return Exit::Failed;
    };
    crate::backend::install_crypto_provider();
    let result = runtime.block_on(async {
        let redis = super::execute::lock_redis(runbook, &lock.target, &secrets)
            .await
            .map_err(|e| e.to_string())?;
        match action {
            LockAction::Status => status(&redis, &lock.key).await,
            LockAction::Break => break_lease(&redis, &lock.key, force).await,
        }
        .map_err(|e| e.to_string())
    });
    match (action, result) {
        (_, Err(e)) => {
            eprintln!(
                "error: the lease in Redis (`{}`): {}",
                lock.key,
                redactor.redact(&e)
            );
            Exit::Failed
        }
        (_, Ok(LeaseState::Free)) => {
            println!("lease `{}` in Redis: free", lock.key);
            Exit::Done
        }
        (LockAction::Status, Ok(LeaseState::Held(holder, ttl))) => {
            println!(
                "lease `{}` in Redis: held by {holder}; it expires in {} unless renewed",
                lock.key,
                super::lease::whole_seconds(ttl)
            );
            Exit::Done
        }
        (LockAction::Break, Ok(LeaseState::Held(holder, _))) if force => {
            println!(
                "broke the lease `{}` of {holder}: its next change is refused by its fencing check",
                lock.key
            );
            Exit::Done
        }
        (LockAction::Break, Ok(LeaseState::Held(holder, ttl))) => {
            eprintln!(
                "error: the lease `{}` in Redis is held by {holder}; it expires in {} once its holder stops renewing it (`--force` removes it now)",
                lock.key,
                super::lease::whole_seconds(ttl)
            );
            Exit::Failed
        }
    }
}

/// `lock` on the state directory's lock file.
fn lock_file(args: &LockArgs, dir: &StateDir) -> Exit {
    let path = dir.lock_path();
    let result = match args.action {
        LockAction::Status => state::status(&path),
        LockAction::Break => state::break_stale(&path),
    };
    match (args.action, result) {
        (_, Err(e)) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
        (_, Ok(LockState::Free)) => {
            println!("state directory lock: free");
            Exit::Done
        }
        (LockAction::Status, Ok(LockState::Held(holder))) => {
            println!("state directory lock: held by {holder}");
            Exit::Done
        }
        (LockAction::Status, Ok(LockState::Stale(holder))) => {
            println!(
                "state directory lock: stale, left by {holder}, which is gone; the next run takes it over (or `redis-move lock break`)"
            );
            Exit::Done
        }
        (LockAction::Break, Ok(LockState::Stale(holder))) => {
            println!("broke the stale lock of {holder}");
            Exit::Done
        }
        // Forcing breaks the lease in Redis; a live process on this machine is left.
        (LockAction::Break, Ok(LockState::Held(holder))) if args.force => {
            println!(
                "state directory lock: held by a live process on this machine ({holder}); left as it is"
            );
            Exit::Done
        }
        (LockAction::Break, Ok(LockState::Held(holder))) => {
            eprintln!(
                "error: the lock is held by a live process: {holder}; stop that run (Ctrl-C) instead"
            );
            Exit::Failed
        }
    }
}
