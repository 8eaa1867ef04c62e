//! Command-line arguments (clap) and their conversion into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::diagram::DiagramFormat;
use crate::runbook::diagnostic::DiagnosticFormat;

const EXAMPLES: &str = "\
Examples:
  redis-move validate runbooks/*.yaml                 check runbooks (CI: --format github)
  redis-move plan runbooks/vps01-to-vps.yaml          preview exactly what a run will do
  redis-move plan runbooks/vps01-to-vps.yaml --vars-file runbooks/vars/vps01-to-vps.sandbox.yaml
  redis-move plan runbooks/vps01-to-vps.yaml --out plan.json   save the reviewed plan
  redis-move graph runbooks/vps01-to-vps.yaml --format mermaid
  redis-move schema > runbook.schema.json

Exit codes: 0 done, 1 invalid runbook (validate) or step failed, 2 usage error or invalid
runbook (other commands), 3 rolled back, 4 stopped at a gate, 5 rollback failed,
130 interrupted.";

/// Runs Redis migration runbooks: checks, go/no-go gates, rollback triggers.
#[derive(Debug, Parser)]
#[command(name = "redis-move", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to use colours (NO_COLOR is honoured with `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Who is running redis-move: recorded in journals, reports, gate decisions and the
    /// run lock (default: REDIS_MOVE_OPERATOR, then `$USER@host`).
    #[arg(long, global = true, value_name = "NAME")]
    pub operator: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When writing to a terminal and NO_COLOR is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check runbook files and report every problem with its file:line:column.
    #[command(
        after_help = "Exit codes: 0 all valid, 1 a runbook is invalid, 2 usage error (e.g. a file cannot be read)."
    )]
    Validate(ValidateArgs),
    /// Preview a run: every phase and step in order with the exact operation, gates,
    /// triggers and the rollback plan. Performs nothing.
    Plan(PlanArgs),
    /// Render the step graph (Mermaid renders on GitHub).
    Graph(GraphArgs),
    /// Print the JSON Schema of the runbook format (draft-07, for editors).
    Schema,
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write a new runbook from a template (asks the few values it needs on a
    /// terminal, or takes them as --var), with its vars file and the schema beside it.
    #[command(
        after_help = "Templates:\n  docker-move    move a Dockerised Redis to another host with replication\n  managed-copy   move to a managed Redis with a verified copy\n  rename-keys    rename keys in place (job:* -> step:*)\n\nExamples:\n  redis-move init                                   choose on the terminal\n  redis-move init rename-keys --out runbooks/steps.yaml --var from=job: --var to=step:"
    )]
    Init(InitArgs),
    /// Print the manual page (roff), or write one per command into a directory.
    #[command(
        after_help = "Examples:\n  redis-move man | man -l -                  read it now\n  redis-move man --out-dir ~/.local/share/man/man1   install the pages (then `man redis-move`)"
    )]
    Man {
        /// Write `redis-move.1` and `redis-move-<command>.1` here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Run a runbook: every step for real, stopping at go/no-go gates, with a journal
    /// from which a failed or interrupted run resumes.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Continue a failed, interrupted or stopped run from its first unfinished step.
    Resume(ResumeArgs),
    /// Roll back a run by hand (finished, failed or interrupted).
    Rollback(RollbackArgs),
    /// Show the state of a run.
    Status(StatusArgs),
    /// Write a run's report again (report.md, report.html, report.json, and JUnit with --junit).
    Report(ReportArgs),
    /// Approve (or refuse) a gate that a running or stopped run is waiting at.
    Approve(ApproveArgs),
    /// Inspect or break the lock that keeps two runs of one runbook apart.
    Lock(LockArgs),
    /// Serve the live page of a run in progress (or ended): steps, the gate it waits
    /// at, triggers, log; gates are decided there with the run's token.
    Serve(ServeArgs),
}

const RUN_HELP: &str = "\
Examples:
  redis-move run runbooks/vps01-to-vps.yaml                    interactive: asks at every gate
  redis-move run runbooks/vps01-to-vps.yaml --approve go       non-interactive, gate `go` approved
  redis-move run runbooks/vps01-to-vps.yaml --plan plan.json   run exactly the reviewed plan
  redis-move resume --approve cleanup-gate                     continue the latest run

Without a terminal and without approval, a run stops at a gate with exit 4, its state
saved; `redis-move resume --approve GATE` continues, and `redis-move approve RUN GATE`
from another shell approves a gate a running process waits at.";

/// Var overrides shared by the commands that read a runbook.
#[derive(Debug, Args, Clone, Default)]
pub struct VarArgs {
    /// Override a var: `--var NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Read var overrides from a YAML file of `name: value` pairs (repeatable; later
    /// files and `--var` win).
    #[arg(long = "vars-file", value_name = "FILE")]
    pub vars_files: Vec<PathBuf>,
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

/// `validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Runbook files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
    pub format: DiagnosticFormat,
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Var overrides.
    #[command(flatten)]
    pub vars: VarArgs,
}

/// Plan output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A listing for people.
    Text,
    /// JSON.
    Json,
}

/// `plan` arguments.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The runbook.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also write the plan as JSON (with the runbook's sha256) to this file, for
    /// `run --plan`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Run the read-only probes (`verified` steps) against the live systems and show
    /// what they measure; nothing is changed. Exit 1 when a check fails.
    #[arg(long)]
    pub check: bool,
    /// Var overrides.
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `graph` arguments.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The runbook.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Diagram format.
    #[arg(long, value_enum, default_value_t = DiagramFormat::Mermaid)]
    pub format: DiagramFormat,
    /// Var overrides.
    #[command(flatten)]
    pub vars: VarArgs,
}

/// How a run reports progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people: progress bars on a terminal, timestamped lines otherwise.
    #[default]
    Text,
    /// One JSON object per event on stdout.
    Json,
}

/// Options shared by `run`, `resume` and `rollback`.
#[derive(Debug, Args, Clone, Default)]
pub struct ExecArgs {
    /// Approve this gate or manual step without asking (repeatable).
    #[arg(long, value_name = "ID")]
    pub approve: Vec<String>,
    /// Approve every gate and manual step.
    #[arg(long)]
    pub yes: bool,
    /// Never ask on the terminal (gates without approval stop the run, exit 4, unless
    /// --wait-at-gates or --serve: then they wait for a decision from elsewhere).
    #[arg(long)]
    pub no_input: bool,
    /// Without a terminal, wait at gates for `redis-move approve` instead of stopping.
    #[arg(long)]
    pub wait_at_gates: bool,
    /// Steps run at once in a parallel phase without its own limit.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,
    /// Plain lines instead of progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Progress output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Also write a JUnit XML of the checks to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// The state directory (default: `.redis-move/<runbook name>` beside the runbook).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve the run's live page at this address (`127.0.0.1:8077`, or a port for
    /// 127.0.0.1); the run then waits at gates for a decision from the page.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<String>,
    /// How the live page is served.
    #[command(flatten)]
    pub page: PageArgs,
}

/// Options of the live page (`run --serve`, `redis-move serve`).
#[derive(Debug, Args, Clone, Default)]
pub struct PageArgs {
    /// Serve the page over HTTPS with this PEM certificate chain (with --page-tls-key).
    #[arg(long, value_name = "FILE", requires = "page_tls_key")]
    pub page_tls_cert: Option<PathBuf>,
    /// The PEM private key of --page-tls-cert.
    #[arg(long, value_name = "FILE", requires = "page_tls_cert")]
    pub page_tls_key: Option<PathBuf>,
    /// Allow a non-loopback address over plain HTTP (the token crosses the network
    /// in clear).
    #[arg(long)]
    pub page_insecure: bool,
    /// Read the token that approvals on the page need from this file (default: a new
    /// random one, printed, and kept in the run's directory as `serve.token`).
    #[arg(long, value_name = "FILE")]
    pub page_token_file: Option<PathBuf>,
}

impl PageArgs {
    /// The page's options at `addr`.
    pub fn options(&self, addr: &str) -> crate::run::serve::ServeOptions {
        crate::run::serve::ServeOptions {
            addr: addr.to_owned(),
            tls_cert: self.page_tls_cert.clone(),
            tls_key: self.page_tls_key.clone(),
            insecure: self.page_insecure,
            token_file: self.page_token_file.clone(),
        }
    }
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The template (`docker-move`, `managed-copy`, `rename-keys`); asked on a terminal
    /// when left out.
    #[arg(value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// The runbook file to write (default: `<name>.yaml`); its vars file goes beside it
    /// (`<stem>.vars.yaml`), with `runbook.schema.json` for editors.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The runbook's name (default: the file's stem, else the template's).
    #[arg(long)]
    pub name: Option<String>,
    /// A value of the template: `--var NAME=VALUE` (repeatable; not asked then).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Never ask: the template's values stand for those not given.
    #[arg(long)]
    pub no_input: bool,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The run id (default: the latest run).
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// The runbook, to find its state directory.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where to serve the page (a port alone means 127.0.0.1).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8077")]
    pub addr: String,
    /// How the page is served.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the plan and perform nothing (identical to `redis-move plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the dry run.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Run exactly this reviewed plan (`plan --out`); refused if the runbook changed.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    /// Start at this step (earlier steps are skipped).
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,
    /// Var overrides.
    #[command(flatten)]
    pub vars: VarArgs,
    /// Execution options.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Which run (the latest when not given).
#[derive(Debug, Args, Clone)]
pub struct RunRef {
    /// The run id (default: the latest run).
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// The runbook, to find its state directory.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// Execution options.
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// `rollback` arguments.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Which run.
    #[command(flatten)]
    pub target: RunRef,
    /// Var overrides, as `run` took them (needed again only for values the journal
    /// does not keep: a password written literally in a `--var`).
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `resume` arguments.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Which run.
    #[command(flatten)]
    pub target: RunRef,
    /// Resume even though steps already done changed in the runbook.
    #[arg(long)]
    pub force: bool,
    /// Run again mutating steps that were interrupted mid-way (their effect is unknown).
    #[arg(long)]
    pub rerun_interrupted: bool,
    /// Var overrides (needed again only for values the journal masked).
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run id (default: the latest run).
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// The runbook, to find its state directory.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id (default: the latest run).
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// The runbook, to find its state directory.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Also write a JUnit XML of the checks to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `approve` arguments.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The run id (`latest` for the latest run).
    #[arg(value_name = "RUN")]
    pub run: String,
    /// The gate or manual step.
    #[arg(value_name = "GATE")]
    pub gate: String,
    /// Refuse instead of approving.
    #[arg(long)]
    pub no_go: bool,
    /// The runbook, to find its state directory.
    #[arg(long, value_name = "FILE")]
    pub runbook: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `lock` actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LockAction {
    /// Who holds the lock.
    Status,
    /// Clear a lock left by a killed run (a live holder is never broken).
    Break,
}

/// `lock` arguments.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// What to do.
    #[arg(value_enum)]
    pub action: LockAction,
    /// The runbook whose lock it is.
    #[arg(long, value_name = "FILE", required_unless_present = "state_dir")]
    pub runbook: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// With `break`: remove the runbook's lease in Redis (`lock:`) although it is held;
    /// the holder's next change is then refused by its fencing check.
    #[arg(long)]
    pub force: bool,
    /// The vars the run was given (a lease key may use them).
    #[command(flatten)]
    pub vars: VarArgs,
}
