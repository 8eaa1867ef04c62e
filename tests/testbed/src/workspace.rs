//! A directory holding one runbook, and the `redis-move` binary run in it: commands,
//! background runs, and the journal of the latest run.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A temporary directory with `runbook.yaml` in it.
pub struct Workspace {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Workspace {
    /// A workspace holding `runbook` (its `name:` names the state directory).
    pub fn new(runbook: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("runbook.yaml"), runbook).expect("write runbook");
        Workspace {
            dir,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every command run here (secrets).
    pub fn with_env(mut self, name: &str, value: &str) -> Workspace {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `redis-move` with `args`, in the workspace, no colours, no inherited RUST_LOG;
    /// killed after 10 minutes, so that a hang fails its test instead of stalling CI.
    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("redis-move").expect("the redis-move binary");
        cmd.timeout(std::time::Duration::from_secs(600))
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().cloned())
            .args(args);
        cmd
    }

    /// `redis-move run runbook.yaml --no-progress`, waited for.
    pub fn run(&self) -> assert_cmd::assert::Assert {
        self.cmd(&["run", "runbook.yaml", "--no-progress"]).assert()
    }

    /// `redis-move` with `args` in the background (stdin closed, stderr piped).
    pub fn spawn(&self, args: &[&str]) -> Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().cloned())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn redis-move")
    }

    /// The directory of the latest run, if any.
    pub fn run_dir(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.path().join("runbook.yaml")).ok()?;
        let name = text.lines().find_map(|l| l.strip_prefix("name: "))?.trim();
        latest_run(&self.path().join(".redis-move").join(name).join("runs"))
    }

    /// The journal of the latest run, if one exists and reads.
    pub fn journal(&self) -> Option<serde_json::Value> {
        read_journal(&self.run_dir()?)
    }

    /// A number in the journaled value of `step` (`field` of its object).
    pub fn value_number(&self, step: &str, field: &str) -> f64 {
        let journal = self.journal().expect("a journal");
        let value = &journal["steps"][step]["value"];
        value["object"][field]["number"]
            .as_f64()
            .unwrap_or_else(|| panic!("no `{field}` in the value of `{step}`: {value}"))
    }

    /// A runbook `name` with redis targets `src` and `dst` on these loopback ports and
    /// one phase `main` holding `steps` (YAML list items, indented six spaces).
    pub fn two_redis_runbook(
        name: &str,
        source_port: u16,
        target_port: u16,
        steps: &str,
    ) -> String {
        format!(
            "version: 1\nname: {name}\ntargets:\n  src: {{ redis: {{ url: \"redis://127.0.0.1:{source_port}\" }} }}\n  dst: {{ redis: {{ url: \"redis://127.0.0.1:{target_port}\" }} }}\nphases:\n  - id: main\n    steps:\n{steps}"
        )
    }

    /// Waits (up to `limit`) until `done` holds, polling every 20 ms.
    pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The latest run directory under `runs` (a state directory's `runs/`).
pub fn latest_run(runs: &Path) -> Option<PathBuf> {
    let mut ids: Vec<PathBuf> = std::fs::read_dir(runs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    ids.sort();
    ids.pop()
}

/// The journal of the run in `run_dir` as redis-move reads it: its snapshot
/// (`journal.json`) with the log of later changes (`journal.log`) applied, through
/// `redis-move status --format json`. `None` when there is none yet or it does not read.
pub fn read_journal(run_dir: &Path) -> Option<serde_json::Value> {
    let run_id = run_dir.file_name()?.to_str()?;
    let state_dir = run_dir.parent()?.parent()?;
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .args(["status", run_id, "--format", "json", "--state-dir"])
        .arg(state_dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// Everything the journal of the run in `run_dir` holds on disk, as text (snapshot and
/// log): to search for what must not be there.
pub fn journal_text(run_dir: &Path) -> String {
    ["journal.json", "journal.log"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(run_dir.join(name)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}
