//! Command-line arguments (clap) and their conversion into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::plan::diagram::DiagramFormat;
use crate::runbook::diagnostic::DiagnosticFormat;

const EXAMPLES: &str = "\
Examples:
  redis-move validate runbooks/*.yaml                 check runbooks (CI: --format github)
  redis-move plan runbooks/vps01-to-vps.yaml          preview exactly what a run will do
  redis-move plan runbooks/vps01-to-vps.yaml --vars-file runbooks/vps01-to-vps.sandbox.yaml
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
    /// Run a runbook. Only `--dry-run` (the same as `plan`) is available in this
    /// version; execution arrives with the executor.
    Run(RunArgs),
}

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
    /// Var overrides.
    #[command(flatten)]
    pub vars: VarArgs,
}
