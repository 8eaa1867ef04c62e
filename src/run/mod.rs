//! The one place where outcomes become text on the terminal and exit codes.

mod execute;
mod init;
mod inspect;
pub mod lease;
pub mod notify;
pub mod serve;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, ColorChoice, Command, PlanArgs, PlanFormat, ValidateArgs, VarArgs};
use crate::plan;
use crate::runbook::diagnostic::{self, Diagnostic, DiagnosticFormat, FileDiagnostics, HumanStyle};
use crate::runbook::{self, Runbook, VarOrigin, VarOverride, yaml};

/// Exit codes, documented in the README. A clean rollback and a failed one never share
/// a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything done.
    Done = 0,
    /// A step failed (resumable), or `validate` found an invalid runbook.
    Failed = 1,
    /// Usage error, or the runbook is invalid (for commands other than `validate`).
    Usage = 2,
    /// Rolled back cleanly.
    RolledBack = 3,
    /// Stopped at a gate (or no-go).
    StoppedAtGate = 4,
    /// A rollback step failed: manual action needed.
    RollbackFailed = 5,
    /// Interrupted (SIGINT).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Runs the command line; the whole program.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage
            } else {
                Exit::Done
            }
            .into();
        }
    };
    init_logging(cli.verbose);
    if let Some(name) = cli
        .operator
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        crate::exec::journal::set_operator(name);
    }
    let style = human_style(cli.color);
    let exit = match cli.command {
        Command::Validate(args) => validate(args, style),
        Command::Plan(args) => plan_command(&args, style),
        Command::Graph(args) => {
            match overrides(&args.vars, style).and_then(|list| load_one(&args.file, &list, style)) {
                Ok(runbook) => print_out(&plan::diagram::render(&runbook, args.format)),
                Err(exit) => exit,
            }
        }
        // The format's own description: no runbook, nothing to redact.
        Command::Schema => print_verbatim(&runbook::schema::schema_json()),
        Command::Man { out_dir } => man_pages(out_dir.as_deref()),
        Command::Init(args) => init::init(args, style),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "redis-move", &mut std::io::stdout());
            Exit::Done
        }
        Command::Run(args) => {
            if args.dry_run {
                let plan_args = PlanArgs {
                    file: args.file,
                    format: args.format,
                    out: None,
                    check: false,
                    vars: args.vars,
                };
                plan_command(&plan_args, style)
            } else {
                execute::run(args, style)
            }
        }
        Command::Resume(args) => execute::resume(args, style, false),
        Command::Rollback(args) => execute::resume(
            crate::cli::ResumeArgs {
                target: args.target,
                force: true,
                rerun_interrupted: false,
                vars: args.vars,
            },
            style,
            true,
        ),
        Command::Status(args) => inspect::status(args),
        Command::Report(args) => inspect::report(args, style),
        Command::Approve(args) => inspect::approve(args),
        Command::Lock(args) => inspect::lock(args, style),
        Command::Serve(args) => inspect::serve(args, style),
    };
    exit.into()
}

/// Crates whose debug and trace records carry request and response bodies (container
/// definitions with their environment, command arguments): capped at `info` whatever
/// the verbosity or `RUST_LOG` asks.
const BODY_LOGGING_CRATES: &[&str] = &["bollard", "hyper", "hyper_util", "h2", "reqwest", "rustls"];

fn init_logging(verbose: u8) {
    // `-v`/`-vv` make redis-move itself verbose; other crates stay at warn/info.
    let default = match verbose {
        0 => "warn",
        1 => "warn,redis_move=debug",
        _ => "info,redis_move=trace",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    for krate in BODY_LOGGING_CRATES {
        if let Ok(directive) = format!("{krate}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Every record, ours and theirs, is redacted before it reaches stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::RedactingStderr::default)
        .try_init();
}

fn human_style(choice: ColorChoice) -> HumanStyle {
    let terminal = std::io::stderr().is_terminal();
    let color = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    HumanStyle {
        color,
        unicode: terminal,
        width: 100,
    }
}

/// Writes `text` to stdout through the redacting sink (a JSON document keeps its
/// structure).
fn print_out(text: &str) -> Exit {
    print_verbatim(&if text.trim_start().starts_with(['{', '[']) {
        crate::redact::at_sink_json(text)
    } else {
        crate::redact::at_sink(text)
    })
}

/// Writes `text` to stdout as it is.
fn print_verbatim(text: &str) -> Exit {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Ok(()) => Exit::Done,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Done,
        Err(e) => {
            eprintln!("error: cannot write output: {e}");
            Exit::Failed
        }
    }
}

/// Reads `--vars-file` and `--var` into overrides; problems in vars files are printed
/// and are usage errors.
fn overrides(args: &VarArgs, style: HumanStyle) -> Result<Vec<VarOverride>, Exit> {
    read_overrides(args).map_err(|problems| {
        print_diagnostics(&problems, DiagnosticFormat::Human, style);
        Exit::Usage
    })
}

fn read_overrides(args: &VarArgs) -> Result<Vec<VarOverride>, Vec<FileDiagnostics>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for path in &args.vars_files {
        match read_vars_file(path) {
            Ok(vars) => out.extend(vars),
            Err(d) => problems.push(d),
        }
    }
    out.extend(args.vars.iter().map(|(name, value)| VarOverride {
        name: name.clone(),
        value: value.clone(),
        origin: VarOrigin::CommandLine,
        at: None,
    }));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn read_vars_file(path: &Path) -> Result<Vec<VarOverride>, FileDiagnostics> {
    let (source, problem) = match yaml::read_source(path) {
        Ok(read) => read,
        Err(e) => {
            let source = runbook::SourceFile::new(path, "");
            let d = Diagnostic::error(
                "unreadable",
                runbook::source::Span::UNKNOWN,
                format!("cannot read vars file: {e}"),
            );
            return Err(FileDiagnostics::new(source, vec![d]));
        }
    };
    if let Some(problem) = problem {
        return Err(FileDiagnostics::new(source, vec![problem]));
    }
    let root = yaml::parse(&source).map_err(|d| FileDiagnostics::new(source.clone(), vec![*d]))?;
    let origin = VarOrigin::VarsFile(source.name());
    let mut vars = Vec::new();
    let mut problems = Vec::new();
    match root.as_map() {
        Some(entries) => {
            for (key, value) in entries {
                match (
                    key.as_str(),
                    value.as_map().is_none() && value.as_seq().is_none(),
                ) {
                    (Some(name), true) => vars.push(VarOverride {
                        name: name.to_owned(),
                        value: value.scalar_text().unwrap_or_default(),
                        origin: origin.clone(),
                        at: Some((source.clone(), key.span)),
                    }),
                    _ => problems.push(Diagnostic::error(
                        "bad-vars-file",
                        value.span,
                        "a vars file maps names to strings, numbers or booleans",
                    )),
                }
            }
        }
        None if root.value == yaml::NodeValue::Null => {}
        None => problems.push(Diagnostic::error(
            "bad-vars-file",
            root.span,
            "a vars file is a map of `name: value`",
        )),
    }
    if problems.is_empty() {
        Ok(vars)
    } else {
        Err(FileDiagnostics::new(source, problems))
    }
}

fn print_diagnostics(files: &[FileDiagnostics], format: DiagnosticFormat, style: HumanStyle) {
    let text = diagnostic::render(files, format, style);
    if text.is_empty() {
        return;
    }
    match format {
        DiagnosticFormat::Human => eprint!("{text}"),
        _ => print!("{text}"),
    }
}

/// Loads one runbook for a command that needs a valid one; invalid means exit 2.
/// Whether `runbook` validates with `vars_file` without an error or a warning (what
/// `validate --deny-warnings` requires); the problems are printed.
fn validates_cleanly(runbook: &Path, vars_file: &Path, style: HumanStyle) -> bool {
    let args = VarArgs {
        vars: Vec::new(),
        vars_files: vec![vars_file.to_path_buf()],
    };
    let overrides = match read_overrides(&args) {
        Ok(overrides) => overrides,
        Err(problems) => {
            print_diagnostics(&problems, DiagnosticFormat::Human, style);
            return false;
        }
    };
    match runbook::load(runbook, &overrides) {
        Ok(loaded) => {
            let diagnostics = loaded.all_diagnostics();
            print_diagnostics(&diagnostics, DiagnosticFormat::Human, style);
            loaded.runbook.is_some() && diagnostics.iter().all(|f| f.diagnostics.is_empty())
        }
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", runbook.display());
            false
        }
    }
}

fn load_one(path: &Path, overrides: &[VarOverride], style: HumanStyle) -> Result<Runbook, Exit> {
    let loaded = runbook::load(path, overrides).map_err(|e| {
        eprintln!("error: cannot read `{}`: {e}", path.display());
        Exit::Usage
    })?;
    print_diagnostics(&loaded.all_diagnostics(), DiagnosticFormat::Human, style);
    match loaded.runbook {
        Some(runbook) => {
            // What the runbook itself reveals (URL passwords in its targets and vars) is
            // known to the output sinks before anything is printed.
            let _ = crate::actions::resolve::Secrets::default().redactor_for(&runbook);
            Ok(runbook)
        }
        None => {
            let errors = loaded.error_count();
            eprintln!(
                "error: `{}` is not a valid runbook ({errors} error{})",
                path.display(),
                if errors == 1 { "" } else { "s" }
            );
            Err(Exit::Usage)
        }
    }
}

fn plan_command(args: &PlanArgs, style: HumanStyle) -> Exit {
    let list = match overrides(&args.vars, style) {
        Ok(list) => list,
        Err(exit) => return exit,
    };
    let runbook = match load_one(&args.file, &list, style) {
        Ok(runbook) => runbook,
        Err(exit) => return exit,
    };
    let mut plan = plan::build(&runbook);
    if args.check {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return Exit::Failed;
            }
        };
        runtime.block_on(crate::exec::preflight::check(&runbook, &mut plan));
    }
    if let Some(out) = &args.out
        && let Err(e) = write_atomically(
            out,
            crate::redact::at_sink_json(&plan::render_json(&plan)).as_bytes(),
        )
    {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return Exit::Usage;
    }
    let printed = match args.format {
        PlanFormat::Text => print_out(&plan::render_text(&plan)),
        PlanFormat::Json => print_out(&crate::redact::at_sink_json(&plan::render_json(&plan))),
    };
    match plan.summary.live {
        Some([_, failed, errors, _]) if failed + errors > 0 => Exit::Failed,
        _ => printed,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Loads many runbooks on all cores (CI validates whole directories); results come
/// back in the order of `paths`.
fn load_all(paths: &[PathBuf], overrides: &[VarOverride]) -> Vec<std::io::Result<runbook::Loaded>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len().max(1));
    if workers <= 1 {
        return paths.iter().map(|p| runbook::load(p, overrides)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<std::io::Result<runbook::Loaded>>> =
        (0..paths.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        done.push((i, runbook::load(path, overrides)));
                    }
                    done
                })
            })
            .collect();
        for handle in handles {
            // A panic in a worker is a bug; re-raise it rather than lose a file's result.
            for (i, loaded) in handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
            {
                slots[i] = Some(loaded);
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Err(std::io::Error::other("not validated"))))
        .collect()
}

fn validate(args: ValidateArgs, style: HumanStyle) -> Exit {
    let overrides = match read_overrides(&args.vars) {
        Ok(o) => o,
        Err(problems) => {
            print_diagnostics(&problems, args.format, style);
            return Exit::Usage;
        }
    };
    let mut results = Vec::new();
    let mut unreadable: Vec<PathBuf> = Vec::new();
    let mut summaries = Vec::new();
    for (path, outcome) in args.files.iter().zip(load_all(&args.files, &overrides)) {
        match outcome {
            Ok(loaded) => {
                if let Some(runbook) = &loaded.runbook {
                    let steps: usize = runbook.phases.iter().map(|p| p.steps.len()).sum();
                    summaries.push(format!(
                        "{}: valid ({} phases, {steps} steps, {} triggers)",
                        loaded.diagnostics.file.name(),
                        runbook.phases.len(),
                        runbook.triggers.len()
                    ));
                }
                results.push(loaded);
            }
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", path.display());
                unreadable.push(path.clone());
            }
        }
    }
    // A runbook is invalid with its own problems or those of the vars files it was
    // loaded with.
    let invalid = results
        .iter()
        .filter(|l| {
            l.all_diagnostics()
                .iter()
                .any(|f| f.error_count() > 0 || (args.deny_warnings && f.warning_count() > 0))
        })
        .count();
    let validated = results.len();
    let files: Vec<FileDiagnostics> = results
        .into_iter()
        .flat_map(|l| l.all_diagnostics())
        .collect();
    print_diagnostics(&files, args.format, style);
    let errors: usize = files.iter().map(FileDiagnostics::error_count).sum();
    let warnings: usize = files.iter().map(FileDiagnostics::warning_count).sum();
    if args.format == DiagnosticFormat::Human {
        for line in &summaries {
            eprintln!("{line}");
        }
        eprintln!(
            "validated {} runbook{}: {} invalid, {errors} error{}, {warnings} warning{}",
            validated,
            if validated == 1 { "" } else { "s" },
            invalid,
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        );
    }
    if !unreadable.is_empty() {
        Exit::Usage
    } else if invalid > 0 {
        Exit::Failed
    } else {
        Exit::Done
    }
}

/// Directory of the committed manual pages (kept current by a test).
pub const MAN_DIR: &str = "docs/man";

/// The manual pages, generated from the command-line definitions: the main page, and
/// one per command (`redis-move-run.1`), as (file name, roff).
pub fn man_pages_roff() -> Vec<(String, String)> {
    fn render(command: clap::Command, name: String, out: &mut Vec<(String, String)>) {
        let mut roff = Vec::new();
        let _ = clap_mangen::Man::new(command.clone()).render(&mut roff);
        out.push((
            format!("{name}.1"),
            String::from_utf8_lossy(&roff).into_owned(),
        ));
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_name = format!("{name}-{}", sub.get_name());
            render(sub.clone().name(sub_name.clone()), sub_name, out);
        }
    }
    let mut command = Cli::command();
    command.build();
    let mut pages = Vec::new();
    render(command, "redis-move".into(), &mut pages);
    pages
}

/// `redis-move man`.
fn man_pages(out_dir: Option<&Path>) -> Exit {
    let pages = man_pages_roff();
    let Some(dir) = out_dir else {
        print_verbatim(&pages[0].1);
        return Exit::Done;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create `{}`: {e}", dir.display());
        return Exit::Usage;
    }
    for (name, roff) in &pages {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, roff) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return Exit::Usage;
        }
        println!("{}", path.display());
    }
    Exit::Done
}
